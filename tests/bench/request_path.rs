//! Section 7 of the benchmark, the request path under wrk (issue #15): requests/s, p50, p99
//! and max latency at 4 and 16 connections, the manager's CPU per request (and its workers'
//! and wrk's, which share the cores: the ceiling they put on requests/s), its idle CPU, and
//! nginx round-robin over workers fast enough that the proxy is the bottleneck. Beside the
//! manager, when `npm ci --prefix tests/bench/bun` has installed it, a Bun/Elysia service with
//! the original's JSON route in front of the same workers.
//!
//! Everything is measured side by side, in one run, interleaved round by round, so load from
//! the rest of the machine hits every row alike. Each connection count gets a fresh manager,
//! so the max latency includes what a burst of new connections costs a fresh one.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use super::support::*;
use super::{multipart, verdict, worker_ports};

/// Length of each wrk run.
const RUN_SECONDS: u64 = 5;
/// Rounds of each row; the median round is reported, with the range.
const ROUNDS: usize = 3;

/// The original Bun/Elysia service's figures on this machine (issue #15's table; the original
/// is not published, so it cannot be run here): req/s at 4 and 16 connections, the midpoints
/// of the ranges measured. The target is 1.3x these; when the Bun stand-in is installed, the
/// manager is compared with it instead, measured beside it.
const BUN_RPS: [(usize, f64); 2] = [(4, 3_690.0), (16, 5_085.0)];

/// What whisper-server answers, fixed: the fast worker's whole reply.
const FIXED_ANSWER: &str = r#"{"task":"transcribe","language":"english","duration":1.0,"text":" stub","segments":[{"id":0,"seek":0,"start":0.0,"end":1.0,"text":" stub","tokens":[1],"temperature":0.0,"avg_logprob":-0.1,"compression_ratio":1.0,"no_speech_prob":0.01,"words":[]}]}"#;

/// One wrk run.
#[derive(Debug, Clone, Copy, Default)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    requests: u64,
    /// wrk's socket errors (connect, read, write, timeout) summed: a timeout is a request
    /// unanswered within wrk's 2 s.
    socket_errors: u64,
}

/// A request wrk repeats.
struct Post {
    url: String,
    /// The Lua script that sets wrk's method, headers and body.
    script: String,
}

impl Post {
    fn new(scratch: &Path, name: &str, url: String, content_type: &str, body: &[u8]) -> Post {
        let body_file = scratch.join(format!("{name}.body"));
        std::fs::write(&body_file, body).unwrap();
        let script = scratch.join(format!("{name}.lua"));
        std::fs::write(
            &script,
            format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"{content_type}\"\n\
                 local f = io.open(\"{}\", \"rb\")\nwrk.body = f:read(\"*a\")\nf:close()\n",
                body_file.display()
            ),
        )
        .unwrap();
        Post {
            url,
            script: script.display().to_string(),
        }
    }

    /// wrk with `connections` connections on 2 threads for `RUN_SECONDS`.
    fn run(&self, connections: usize) -> Run {
        let output = Command::new("wrk")
            .args(["-t2", "--latency", "-s", &self.script])
            .arg(format!("-c{connections}"))
            .arg(format!("-d{RUN_SECONDS}s"))
            .arg(&self.url)
            .output()
            .expect("wrk runs");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            !text.contains("Non-2xx"),
            "{} answered errors under wrk:\n{text}",
            self.url
        );
        parse_wrk(&text)
    }
}

/// The figures of wrk's `--latency` report.
fn parse_wrk(text: &str) -> Run {
    let words = |prefix: &str| -> Vec<String> {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .map(|l| l.split_whitespace().map(String::from).collect())
            .unwrap_or_default()
    };
    let ms = |w: Option<&String>| w.map_or(f64::NAN, |w| duration_ms(w));
    Run {
        rps: words("Requests/sec:")
            .get(1)
            .and_then(|w| w.parse().ok())
            .unwrap_or(f64::NAN),
        p50_ms: ms(words("50%").get(1)),
        p99_ms: ms(words("99%").get(1)),
        max_ms: ms(words("Latency").get(3)),
        requests: text
            .lines()
            .find(|l| l.contains(" requests in "))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
        socket_errors: words("Socket errors:")
            .iter()
            .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
            .sum(),
    }
}

/// `310.52us`, `1.02ms`, `1.50s` in milliseconds.
fn duration_ms(word: &str) -> f64 {
    let split = word
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(word.len());
    let (number, unit) = word.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        _ => f64::NAN,
    }
}

/// CPU seconds `pid` has used, all its threads, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    // utime and stime: fields 14 and 15 of the line.
    stat_seconds(&format!("/proc/{pid}"), 14)
}

/// CPU seconds this process's children that ended have used (wrk, once each run is waited
/// for), from `/proc/self/stat`.
fn ended_children_cpu_seconds() -> f64 {
    // cutime and cstime: fields 16 and 17 of the line.
    stat_seconds("/proc/self", 16)
}

/// Fields `first` and `first + 1` of `DIR/stat` (numbered from 1, as in proc(5)), clock
/// ticks, added up in seconds.
fn stat_seconds(dir: &str, first: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("{dir}/stat")).unwrap_or_default();
    // The fields after the command name (field 2), which is in parentheses and may hold
    // spaces: field 3 is the first of them.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |field: usize| fields.get(field - 3).and_then(|f| f.parse::<f64>().ok());
    match (ticks(first), ticks(first + 1)) {
        (Some(a), Some(b)) => (a + b) / clock_ticks(),
        _ => f64::NAN,
    }
}

/// `USER_HZ`, the unit of `/proc/PID/stat`'s times, asked once (`getconf` is a child whose
/// CPU would otherwise count as wrk's).
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// A field of `/proc/PID/task/*/schedstat` summed over the threads of `pid`: 0, the CPU
/// nanoseconds they ran (finer than `/proc/PID/stat`'s clock ticks); 2, the times they were
/// switched in. A thread that ends meanwhile takes its share with it; none does under wrk.
fn threads_schedstat(pid: u32, field: usize) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return f64::NAN;
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().nth(field)?.parse::<f64>().ok())
        .sum()
}

fn context_switches(pid: u32) -> f64 {
    threads_schedstat(pid, 2)
}

/// CPU milliseconds per request of the manager, its workers and the client, and the
/// manager's context switches per request.
#[derive(Debug, Clone, Copy)]
struct Cost {
    cpu_ms: f64,
    switches: f64,
    workers_ms: f64,
    client_ms: f64,
}

/// Runs `post` and says what the proxy `pid` (the manager or the Bun stand-in), the workers
/// and wrk spent per request meanwhile.
fn run_measuring_cpu(post: &Post, connections: usize, pid: u32, workers: &[u32]) -> (Run, Cost) {
    let workers_cpu = || workers.iter().map(|&w| cpu_seconds(w)).sum::<f64>();
    let (cpu, switches) = (cpu_seconds(pid), context_switches(pid));
    let (workers_before, client_before) = (workers_cpu(), ended_children_cpu_seconds());
    let run = post.run(connections);
    let per_request = |seconds: f64| seconds * 1000.0 / run.requests.max(1) as f64;
    let cost = Cost {
        cpu_ms: per_request(cpu_seconds(pid) - cpu),
        switches: (context_switches(pid) - switches) / run.requests.max(1) as f64,
        workers_ms: per_request(workers_cpu() - workers_before),
        client_ms: per_request(ended_children_cpu_seconds() - client_before),
    };
    (run, cost)
}

/// CPU microseconds one hand-off between two threads costs on this machine: two threads
/// passing a token back and forth through rendezvous channels, each sleeping until woken, as a
/// request thread sleeps until the connection's thread hands it a request. The floor under
/// the manager's CPU per request is its switches per request times this.
fn hand_off_us() -> f64 {
    use std::sync::mpsc::sync_channel;
    const ROUND_TRIPS: u32 = 50_000;
    let (to_echo, echo_in) = sync_channel::<u32>(0);
    let (echo_out, back) = sync_channel::<u32>(0);
    let echo = std::thread::spawn(move || {
        for token in echo_in {
            if echo_out.send(token).is_err() {
                break;
            }
        }
    });
    let before = threads_schedstat(std::process::id(), 0);
    for token in 0..ROUND_TRIPS {
        to_echo.send(token).unwrap();
        back.recv().unwrap();
    }
    let spent = threads_schedstat(std::process::id(), 0) - before;
    drop(to_echo);
    echo.join().unwrap();
    spent / 1000.0 / f64::from(2 * ROUND_TRIPS)
}

/// What the machine's cores allow: the manager, the stub workers and wrk share them, so
/// req/s is at most the cores over their CPU per request; and the manager's CPU per request
/// that 1.3x Bun's req/s (the stand-in's, else the original's table) would need beside the
/// workers and wrk measured.
fn print_ceiling(costs: &[Cost], bun_rps: f64) {
    // Each figure's median over the rounds, which may come from different rounds: an estimate.
    let median = |f: fn(&Cost) -> f64| {
        let mut values: Vec<f64> = costs.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let (manager, workers, client) = (
        median(|c| c.cpu_ms),
        median(|c| c.workers_ms),
        median(|c| c.client_ms),
    );
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    println!(
        "    beside it, per request: the stub workers {workers:.3} ms, wrk {client:.3} ms; \
         {cores:.0} cores allow at most {:.0} req/s",
        cores * 1000.0 / (manager + workers + client)
    );
    let wanted = 1.3 * bun_rps;
    println!(
        "    {wanted:.0} req/s (1.3x Bun's) leaves the manager at most {:.3} ms of CPU per request here",
        cores * 1000.0 / wanted - workers - client
    );
}

fn installed(program: &str, version_flag: &str) -> bool {
    Command::new(program)
        .arg(version_flag)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The median run by req/s, and the range of each figure over the runs.
struct Summary {
    median: Run,
    rps: (f64, f64),
    p99: (f64, f64),
    max: (f64, f64),
    socket_errors: u64,
}

fn summarize(mut runs: Vec<Run>) -> Summary {
    let range = |f: fn(&Run) -> f64| {
        runs.iter()
            .map(f)
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    let (rps, p99, max) = (range(|r| r.rps), range(|r| r.p99_ms), range(|r| r.max_ms));
    let socket_errors = runs.iter().map(|r| r.socket_errors).sum();
    runs.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    Summary {
        median: runs[runs.len() / 2],
        rps,
        p99,
        max,
        socket_errors,
    }
}

fn row(name: &str, s: &Summary) {
    let m = &s.median;
    println!(
        "| {name:<40} | {:>7.0} ({:.0}-{:.0}) | {:>6.2} | {:>6.2} ({:.2}-{:.2}) | {:>7.1} ({:.1}-{:.1}) |",
        m.rps, s.rps.0, s.rps.1, m.p50_ms, m.p99_ms, s.p99.0, s.p99.1, m.max_ms, s.max.0, s.max.1
    );
    if s.socket_errors > 0 {
        println!(
            "|   (wrk counted {} socket errors or timeouts over 2 s) | | | | |",
            s.socket_errors
        );
    }
}

fn table_head() {
    println!(
        "| {:<40} | req/s (range) | p50 ms | p99 ms (range) | max ms (range) |",
        "path"
    );
    println!("|---|---|---|---|---|");
}

/// The manager with a pool of 2 stub workers answering at once (or `command`'s workers), with
/// the default 1024 request threads.
fn fresh_manager(command: Option<&Path>) -> Manager {
    let mut setup = Setup::new()
        .pool(2)
        .set("server", "threads", json!(1024))
        .set("workers", "rotateThreshold", json!(1_000_000_000u64))
        .set("inference", "maxConcurrentInferences", json!(64))
        .env("LOG_LEVEL", "info");
    if let Some(command) = command {
        setup = setup
            .set("workers", "startupTimeoutMs", json!(10_000))
            .env("WHISPER_SERVER_CMD", command.to_str().unwrap());
    }
    let manager = setup.start();
    manager.wait_healthy(2);
    manager
}

pub fn request_path() {
    println!(
        "\n## 7. Request path (wrk, 2 threads, {ROUNDS} rounds of {RUN_SECONDS} s interleaved, median and range; 1 s WAV, pool of 2)\n"
    );
    if !installed("wrk", "--version") {
        return println!("| not measured: wrk is not installed (apt-get install wrk) |");
    }
    let scratch = TempDir::new("wrk");
    let audio = wav(16_000, 1);
    let json_body = transcription(&audio).to_string().into_bytes();
    let (form_type, form_body) = multipart(&audio, "json");
    let mut cpu_rows = Vec::new();
    for connections in [4, 16] {
        let manager = fresh_manager(None);
        let workers = worker_ports(&manager);
        let worker_pids = manager.worker_pids();
        let stand_in = BunStandIn::start(&workers);
        let json = |name: &str, url: String| {
            Post::new(&scratch.0, name, url, "application/json", &json_body)
        };
        let mut posts = vec![
            (
                "straight to a worker (stub)",
                Post::new(
                    &scratch.0,
                    "direct",
                    format!("http://127.0.0.1:{}/inference", workers[0]),
                    &form_type,
                    &form_body,
                ),
                None,
            ),
            (
                "manager /api/v1/transcriptions (JSON)",
                json("json", manager.url("/api/v1/transcriptions")),
                Some(manager.child.id()),
            ),
            (
                "manager /v1/audio/transcriptions (multipart)",
                Post::new(
                    &scratch.0,
                    "multipart",
                    manager.url("/v1/audio/transcriptions"),
                    &form_type,
                    &form_body,
                ),
                None,
            ),
        ];
        if let Some(bun) = &stand_in {
            posts.push((
                "Bun/Elysia stand-in, same route (JSON)",
                json("bun", bun.url()),
                Some(bun.process.id()),
            ));
            // Its JIT compiles the route's code during the first seconds under load.
            posts[3].1.run(connections);
        }
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); posts.len()];
        let mut costs: Vec<Vec<Cost>> = vec![Vec::new(); posts.len()];
        // The manager first, while it is fresh: its max latency includes the burst of new
        // connections.
        let manager_first = (1..posts.len()).chain([0]);
        for _ in 0..ROUNDS {
            for i in manager_first.clone() {
                let (_, post, proxy) = &posts[i];
                match proxy {
                    Some(pid) => {
                        let (run, cost) = run_measuring_cpu(post, connections, *pid, &worker_pids);
                        runs[i].push(run);
                        costs[i].push(cost);
                    }
                    None => runs[i].push(post.run(connections)),
                }
            }
        }
        let summaries: Vec<Summary> = runs.into_iter().map(summarize).collect();
        println!("\n{connections} connections:\n");
        table_head();
        for ((name, ..), summary) in posts.iter().zip(&summaries) {
            row(name, summary);
        }
        let bun_rps = compare_with_bun(connections, &summaries);
        if connections == 16 {
            let max = summaries[1].max.1.max(summaries[2].max.1);
            println!(
                "max latency, fresh manager, 16 connections: {max:.1} ms (target < 50 ms: {})",
                verdict(max < 50.0)
            );
        }
        let bun_costs = costs.get(3).cloned().unwrap_or_default();
        cpu_rows.push((connections, costs.swap_remove(1), bun_costs, bun_rps));
    }
    let hand_off = hand_off_us();
    println!("\nmanager CPU per request, JSON route (from /proc/PID/stat over each run), and context switches per request (its threads' schedstat):");
    for (connections, costs, bun_costs, bun_rps) in &cpu_rows {
        let (lo, hi) = range(costs, |c| c.cpu_ms);
        let (switches_lo, switches_hi) = range(costs, |c| c.switches);
        println!(
            "  {connections} connections: {lo:.3}-{hi:.3} ms (target < 0.15 ms: {}); {switches_lo:.1}-{switches_hi:.1} switches, \
             {:.3}-{:.3} ms at {hand_off:.1} us each",
            verdict(hi < 0.15),
            switches_lo * hand_off / 1000.0,
            switches_hi * hand_off / 1000.0,
        );
        if !bun_costs.is_empty() {
            let (lo, hi) = range(bun_costs, |c| c.cpu_ms);
            let (switches_lo, switches_hi) = range(bun_costs, |c| c.switches);
            println!(
                "    the Bun stand-in beside it: {lo:.3}-{hi:.3} ms, {switches_lo:.1}-{switches_hi:.1} switches"
            );
        }
        print_ceiling(costs, *bun_rps);
    }
    println!("  one hand-off between two threads (a wake and a sleep, measured here): {hand_off:.1} us of CPU");
    idle_cpu();
    nginx_with_fast_workers(&scratch.0, &json_body);
}

/// The lowest and highest of `f` over `costs`.
fn range(costs: &[Cost], f: fn(&Cost) -> f64) -> (f64, f64) {
    costs
        .iter()
        .map(f)
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// Prints the manager's JSON route over the Bun stand-in's, measured beside it, or over the
/// issue's table of the original when the stand-in is not installed; the req/s compared with.
fn compare_with_bun(connections: usize, summaries: &[Summary]) -> f64 {
    let manager = summaries[1].median.rps;
    let (bun, whose) = match summaries.get(3) {
        Some(bun) => (
            bun.median.rps,
            "the Bun/Elysia stand-in's, measured beside it",
        ),
        None => {
            println!("\n(the Bun stand-in is not installed: npm ci --prefix tests/bench/bun)");
            let table = BUN_RPS
                .iter()
                .find(|(c, _)| *c == connections)
                .map_or(f64::NAN, |(_, r)| *r);
            (
                table,
                "the Bun original's in issue #15's table, not run here",
            )
        }
    };
    let ratio = manager / bun;
    println!(
        "\nJSON route over {whose} ({bun:.0} req/s): {ratio:.2}x (target >= 1.3: {})",
        verdict(ratio >= 1.3)
    );
    bun
}

/// `tests/bench/bun/server.js`: a Bun/Elysia service with the original's JSON route in front
/// of the same workers (the original itself is not published), on a free port. Installed by
/// `npm ci --prefix tests/bench/bun`, which fetches Bun and Elysia from the npm registry.
struct BunStandIn {
    process: Spawned,
    port: u16,
}

impl BunStandIn {
    fn start(workers: &[u16]) -> Option<BunStandIn> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bench/bun");
        let bun = dir.join("node_modules/.bin/bun");
        if !bun.exists() {
            return None;
        }
        let port = free_port_base();
        let workers: Vec<String> = workers.iter().map(u16::to_string).collect();
        let process = Spawned::start(
            Command::new(bun)
                .arg(dir.join("server.js"))
                .current_dir(&dir)
                .env("PORT", port.to_string())
                .env("WORKERS", workers.join(",")),
        );
        wait_for(SOON, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("the Bun stand-in listens");
        Some(BunStandIn { process, port })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/transcriptions", self.port)
    }
}

/// The manager's CPU while nothing happens, over 60 s after 5 s of quiet, with the default
/// health and audit intervals (the tests' own are much shorter). `/proc/PID/stat` counts in
/// clock ticks (10 ms), so 60 s reads to 0.017% of a core.
fn idle_cpu() {
    const QUIET: Duration = Duration::from_secs(5);
    const MEASURED: Duration = Duration::from_secs(60);
    let manager = Setup::new()
        .pool(2)
        .set("server", "threads", json!(1024))
        .set("workers", "healthIntervalMs", json!(5000))
        .set("workers", "healthTimeoutMs", json!(2000))
        .set("workers", "auditIntervalMs", json!(30_000))
        // The default level (the tests log at debug, a line per probe round and audit).
        .env("LOG_LEVEL", "info")
        .start();
    manager.wait_healthy(2);
    std::thread::sleep(QUIET);
    let before = cpu_seconds(manager.child.id());
    std::thread::sleep(MEASURED);
    let share = (cpu_seconds(manager.child.id()) - before) / MEASURED.as_secs_f64() * 100.0;
    println!(
        "\nidle CPU (pool of 2, 1024 request threads, health every 5 s, {} s): {share:.3}% of a core (target < 0.1%: {})",
        MEASURED.as_secs(),
        verdict(share < 0.1)
    );
}

/// A whisper-server stand-in: nginx answering `/inference` with `FIXED_ANSWER` on the port the
/// manager gives, so the worker costs next to nothing and the proxy in front is what is
/// measured. Returns the script the manager runs as its worker command.
fn fast_worker(scratch: &Path) -> std::path::PathBuf {
    let d = scratch.display();
    let script = scratch.join("fast-worker.sh");
    let conf = format!(
        "master_process off; worker_processes 1; error_log stderr; pid {d}/fast-$port.pid; events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/fast-body; proxy_temp_path {d}/fast-proxy;\n\
         fastcgi_temp_path {d}/fast-f; uwsgi_temp_path {d}/fast-u; scgi_temp_path {d}/fast-s;\n\
         keepalive_requests 100000000; default_type application/json;\n\
         server {{ listen 127.0.0.1:$port; location /health {{ return 200 '{{\"status\":\"ok\"}}'; }}\n\
         location / {{ return 200 '{FIXED_ANSWER}'; }} }} }}\n"
    );
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n# nginx answering fixed JSON on the --port it is given (see fast_worker)\n\
             while [ $# -gt 0 ]; do [ \"$1\" = --port ] && port=$2; shift; done\n\
             cat > {d}/fast-$port.conf <<EOF\n{conf}EOF\n\
             exec nginx -p {d} -c {d}/fast-$port.conf -g 'daemon off;'\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// nginx round-robin (its default configuration, as in section 1) and the manager over the
/// same two fast workers.
fn nginx_with_fast_workers(scratch: &Path, json_body: &[u8]) {
    const CONNECTIONS: usize = 16;
    println!("\nnginx round-robin against the manager over the same 2 fast workers (nginx answering fixed JSON), {CONNECTIONS} connections:\n");
    if !installed("nginx", "-v") {
        return println!("| not measured: nginx is not installed (apt-get install nginx-light) |");
    }
    let manager = fresh_manager(Some(&fast_worker(scratch)));
    let workers = worker_ports(&manager);
    let proxy_dir = TempDir::new("nginx-rr");
    let Some((_nginx, port)) = super::start_nginx(&proxy_dir, &workers) else {
        return println!("| not measured: nginx did not start |");
    };
    let audio = wav(16_000, 1);
    let (form_type, form_body) = multipart(&audio, "json");
    let posts = [
        Post::new(
            scratch,
            "fast-nginx",
            format!("http://127.0.0.1:{port}/inference"),
            &form_type,
            &form_body,
        ),
        Post::new(
            scratch,
            "fast-multipart",
            manager.url("/v1/audio/transcriptions"),
            &form_type,
            &form_body,
        ),
        Post::new(
            scratch,
            "fast-json",
            manager.url("/api/v1/transcriptions"),
            "application/json",
            json_body,
        ),
    ];
    let mut runs: [Vec<Run>; 3] = Default::default();
    for _ in 0..ROUNDS {
        for (i, post) in posts.iter().enumerate() {
            runs[i].push(post.run(CONNECTIONS));
        }
    }
    let [nginx, multipart, json] = runs.map(summarize);
    table_head();
    row("nginx round-robin", &nginx);
    row("manager multipart", &multipart);
    row("manager JSON", &json);
    let ratio = multipart.median.rps / nginx.median.rps;
    println!(
        "\nmanager/nginx req/s (multipart): {ratio:.2} (target >= 0.8: {}); JSON: {:.2}",
        verdict(ratio >= 0.8),
        json.median.rps / nginx.median.rps
    );
}
