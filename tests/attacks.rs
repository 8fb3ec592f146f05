//! An anonymous client trying to take the service down (README "Slow and hostile clients"):
//! each test attacks a running manager, then checks that it still serves everyone else and
//! that nothing leaked (open files, threads, memory, read from `/proc`). The bounds are
//! generous; the figures each test prints are the ones in the README.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::procfs::{usage, Usage};
use support::*;

/// The service still transcribes, and answers its probes.
fn assert_serving(manager: &Manager) {
    let audio = wav(300, 7);
    let reply = manager.transcribe(&audio);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["result"]["text"], stub_text(&audio));
    assert_eq!(manager.get("/health").status, 200);
}

/// How many of `streams` get an answer starting with `prefix` (at most 12 bytes), each
/// waited for up to `patience`.
fn answered_with(streams: &[TcpStream], prefix: &[u8], patience: Duration) -> usize {
    streams
        .iter()
        .filter(|&(mut stream)| {
            stream.set_read_timeout(Some(patience)).unwrap();
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).is_ok() && head.starts_with(prefix)
        })
        .count()
}

/// Waits until the manager's open files and threads are back within `slack` of `before`.
fn wait_settled(manager: &Manager, before: Usage, slack: usize) -> Usage {
    let pid = manager.child.id();
    let waited = Instant::now();
    wait_for(SOON, || {
        let now = usage(pid);
        (now.fds <= before.fds + slack && now.threads <= before.threads + slack as u64)
            .then_some(now)
    })
    .unwrap_or_else(|| {
        let open: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|l| l.display().to_string())
            .collect();
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
            .map(|n| n.trim().to_string())
            .collect();
        names.sort();
        names.dedup_by(|a, b| a == b);
        panic!(
            "resources never came back in {:?}: before {before:?}, now {:?}; open: {open:?}; threads named {names:?}",
            waited.elapsed(),
            usage(pid)
        )
    })
}

#[test]
fn huge_declared_bodies_leak_nothing() {
    // A small fd table, as on a VPS with `ulimit -n 256`: a leak of one socket per request
    // would close the port long before 300 requests.
    let manager = Setup::new()
        .launcher(&["prlimit", "--nofile=256:256", "--"])
        .start();
    manager.wait_healthy(2);
    let pid = manager.child.id();
    let before = usage(pid);
    let head =
        b"POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000\r\n\r\n";
    for _ in 0..300 {
        // Each client sends its 88 bytes and leaves at once. When the fd table fills, the
        // listener is replaced (src/http/server.rs) and a connection still queued on the old
        // one is reset: a refusal the client sees, not a leak, so it is not an error here.
        let Ok(mut stream) = TcpStream::connect((std::net::Ipv4Addr::LOCALHOST, manager.port))
        else {
            continue;
        };
        let _ = stream.write_all(head).and_then(|()| stream.flush());
    }
    let peak = usage(pid);
    let after = wait_settled(&manager, before, 16);
    report(&format!(
        "huge Content-Length x300 under ulimit -n 256: fds {} -> {} (peak {}) -> {}, threads {} -> {} -> {}",
        before.fds, peak.fds, peak.fds, after.fds, before.threads, peak.threads, after.threads
    ));
    assert_serving(&manager);
}

#[test]
fn unread_bodies_never_hold_up_an_answer() {
    // 16 request threads; 192 sockets announce bodies nobody will read, and never send them:
    // 5000 bytes, and 1000 (short enough to be read with the head, had it come).
    let key = "k-attack";
    let manager = Setup::new()
        .set("server", "apiKeys", json!([key]))
        .set("server", "readTimeoutMs", json!(30_000))
        .start();
    manager.wait_healthy_with_key(2, key);
    for declared in [5000, 1000] {
        let head = |line: &str| {
            format!("{line} HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n")
        };
        // GETs need no work permit, so only draining off the request threads protects them.
        let idle: Vec<TcpStream> =
            (0..64)
                .map(|_| connect_with(manager.port, head("GET /health").as_bytes()))
                .chain((0..64).map(|_| connect_with(manager.port, head("POST /health").as_bytes())))
                .chain((0..64).map(|_| {
                    connect_with(manager.port, head("POST /api/models/a/load").as_bytes())
                }))
                .collect();
        // Every one of them is answered without its body.
        let answered = answered_with(&idle, b"HTTP/1.1 ", Duration::from_secs(10));
        let started = Instant::now();
        for _ in 0..5 {
            assert_eq!(manager.get("/health").status, 200);
        }
        let health = started.elapsed();
        report(&format!(
            "192 unread {declared}-byte bodies: {answered} answered without their body; 5 x /health in {health:?}"
        ));
        assert_eq!(answered, 192, "{declared}");
        assert!(health < Duration::from_secs(5), "{declared}: {health:?}");
    }
}

#[test]
fn a_client_that_never_reads_its_answers_fills_its_socket_not_our_memory() {
    // Workers that take a second; one connection writes 300 transcriptions of 58 KB each
    // (17 MB) without reading an answer. A short body is read with its head, but a connection
    // has at most two requests in the server, one answered and one queued, and the next is
    // read once one is answered: the rest wait in the socket's buffers, not in our memory.
    let manager = Setup::new().stub(&["--delay-ms", "1000"]).start();
    manager.wait_healthy(2);
    let pid = manager.child.id();
    let before = usage(pid);
    let body = transcription(&wav(22_000, 5)).to_string();
    assert!(body.len() < 64 * 1024);
    let one = format!(
        "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = connect_with(manager.port, b"");
    stream
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    // For 4 s, or until the socket's buffers are full for a second (about 70 requests here).
    // A manager reading them as they come would hold all 300, 17 MB.
    let started = Instant::now();
    let mut sent = 0;
    while sent < 300
        && started.elapsed() < Duration::from_secs(4)
        && stream.write_all(one.as_bytes()).is_ok()
    {
        sent += 1;
    }
    let during = usage(pid);
    report(&format!(
        "pipelined 58 KB transcriptions, never read: {sent} written in {:?}; RSS {} kB -> {} kB",
        started.elapsed(),
        before.rss_kb,
        during.rss_kb
    ));
    assert!(
        during.rss_kb < before.rss_kb + 8 * 1024,
        "RSS {} kB -> {} kB",
        before.rss_kb,
        during.rss_kb
    );
    drop(stream);
    assert_serving(&manager);
}

#[test]
fn stalled_uploads_are_cut_off_and_starve_nobody() {
    // Sized as the defaults are: a thread per connection.
    let manager = Setup::new()
        .set("server", "threads", json!(1024))
        // Long enough that all 500 are parked at once even on a loaded machine (accepting them
        // and starting their threads took over 3 s there), short enough to wait for.
        .set("server", "readTimeoutMs", json!(8000))
        .set("server", "requestTimeoutMs", json!(60_000))
        .start();
    manager.wait_healthy(2);
    let pid = manager.child.id();
    let before = usage(pid);
    // 500 uploads send their head and one byte of body, then nothing.
    let stalled: Vec<TcpStream> = (0..500)
        .map(|_| {
            connect_with(
                manager.port,
                b"POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
            )
        })
        .collect();
    let parked = wait_for(SOON, || {
        let now = usage(pid);
        (now.threads >= before.threads + 900).then_some(now)
    })
    .unwrap_or_else(|| panic!("the uploads never reached the threads: {:?}", usage(pid)));
    let started = Instant::now();
    assert_serving(&manager);
    let normal = started.elapsed();
    // Each is cut off at the read deadline with 408.
    let timed_out = answered_with(&stalled, b"HTTP/1.1 408", Duration::from_secs(20));
    drop(stalled);
    let after = wait_settled(&manager, before, 16);
    let per_thread = (parked.rss_kb.saturating_sub(before.rss_kb)) as f64
        / (parked.threads - before.threads) as f64;
    report(&format!(
        "500 stalled uploads: a normal transcription in {normal:?}; {timed_out} cut off with 408 at the 8 s deadline; \
         threads {} -> {} -> {}, fds {} -> {} -> {}, RSS {} kB -> {} kB ({per_thread:.1} kB per parked thread)",
        before.threads, parked.threads, after.threads, before.fds, parked.fds, after.fds, before.rss_kb, parked.rss_kb
    ));
    assert!(normal < Duration::from_secs(5), "{normal:?}");
    assert_eq!(timed_out, 500);
}

#[test]
fn queued_requests_leave_threads_for_the_probes() {
    // 16 request threads, 2 workers that take 2 s each: 70 transcriptions at once.
    let manager = Setup::new()
        .stub(&["--delay-ms", "2000"])
        .set("inference", "queueTimeoutMs", json!(20_000))
        .start();
    manager.wait_healthy(2);
    let audio = wav(300, 3);
    let body = transcription(&audio).to_string().into_bytes();
    std::thread::scope(|scope| {
        let clients: Vec<_> = (0..70)
            .map(|_| {
                let body = body.clone();
                let url = manager.url("/api/v1/transcriptions");
                scope.spawn(move || {
                    request(
                        "POST",
                        &url,
                        &[("Content-Type", "application/json")],
                        Some(body),
                    )
                    .status
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        for path in ["/health", "/api/v1/status", "/metrics", "/readyz"] {
            let reply = manager.get(path);
            assert!(reply.status == 200, "{path}: {}", reply.status);
        }
        let probes = started.elapsed();
        let statuses: Vec<u16> = clients.into_iter().map(|c| c.join().unwrap()).collect();
        let ok = statuses.iter().filter(|s| **s == 200).count();
        let busy = statuses.iter().filter(|s| **s == 503).count();
        let late = statuses.iter().filter(|s| **s == 504).count();
        report(&format!(
            "70 transcriptions on 2 workers of 2 s, 16 threads: probes answered in {probes:?}; {ok} served, \
             {busy} refused at once with 503, {late} out of time in the queue (504)"
        ));
        assert!(probes < Duration::from_secs(2), "{probes:?}");
        assert_eq!(ok + busy + late, 70, "{statuses:?}");
    });
}

#[test]
fn a_client_cannot_forge_log_lines() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    // A line break in the path is refused before anything is logged (a bare LF or CR in a
    // head is 400); other control characters are logged escaped.
    for head in [
        &b"GET /x\nFAKE-LOG-LINE HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"GET /x\rFAKE-LOG-LINE HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        assert!(whole_exchange(manager.port, head).starts_with("HTTP/1.1 400"));
    }
    let _ = raw_exchange(
        manager.port,
        b"GET /x\x08\x08FAKE-LOG-LINE\x1b[31mRED HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(
        manager.wait_log("FAKE-LOG-LINE"),
        "the request was not logged"
    );
    let log = manager.log_text();
    let forged = log
        .lines()
        .filter(|l| l.starts_with("FAKE-LOG-LINE"))
        .count();
    report(&format!(
        "log injection: {forged} forged lines, {} raw escapes",
        log.matches('\x1b').count()
    ));
    assert_eq!(forged, 0, "{log}");
    assert!(!log.contains('\x1b'), "a raw escape reached the log");
    assert!(
        log.contains("/x\\u{8}\\u{8}FAKE-LOG-LINE\\u{1b}[31mRED"),
        "{log}"
    );
}

#[test]
fn a_stderr_nobody_reads_never_blocks_a_request() {
    // The manager's stderr is a pipe this test never reads: it fills after a few hundred lines.
    let dir = TempDir::new("stderr");
    let config = dir.0.join("config/transcription_manager");
    std::fs::create_dir_all(&config).unwrap();
    let settings = json!({
        "server": { "host": "127.0.0.1", "threads": 16 },
        "workers": { "poolSize": 1, "startingPort": free_port_base() },
    });
    std::fs::write(config.join("settings.json5"), settings.to_string()).unwrap();
    let port = free_port_base();
    let env = [("WHISPER_SERVER_CMD".to_string(), STUB.to_string())];
    let mut command = support::manager::command(&dir.0, &env, &[]);
    let child = command
        .args(["serve", "--port", &port.to_string()])
        .env("LOG_LEVEL", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _stop = Spawned::adopt(child);
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    assert!(wait_ok(&url("/health")), "the manager never became ready");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    // One access-log line each: more than the pipe (64 KiB) and the log queue (4096 lines) hold.
    let started = Instant::now();
    let answered = spread(4, 6000, |_| {
        agent
            .get(url("/api/v1/status"))
            .call()
            .is_ok_and(|r| r.status() == 200)
    })
    .into_iter()
    .filter(|ok| *ok)
    .count();
    let elapsed = started.elapsed();
    let metrics = request("GET", &url("/metrics"), &[], None).text();
    let dropped: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("ism_log_lines_dropped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    report(&format!(
        "stderr never read: {answered} of 6000 requests answered in {elapsed:?}; {dropped} log lines dropped and counted"
    ));
    assert_eq!(answered, 6000);
    assert!(dropped > 0.0, "{metrics}");
}

#[test]
fn a_huge_json_rpc_batch_is_refused_before_it_is_parsed() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let pid = manager.child.id();
    let before = usage(pid);
    // Half a million pings: 23 MB of JSON, four clients at once.
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"ping"},"#;
    let mut batch = String::with_capacity(call.len() * 500_000 + 2);
    batch.push('[');
    for _ in 0..500_000 {
        batch.push_str(call);
    }
    batch.pop();
    batch.push(']');
    let replies: Vec<Reply> = spread(4, 4, |_| {
        request(
            "POST",
            &manager.url("/rpc"),
            &[("Content-Type", "application/json")],
            Some(batch.clone().into_bytes()),
        )
    });
    let peak_kb = support::procfs::status_field(pid, "VmHWM");
    let after = usage(pid);
    // A batch at the cap is answered call by call.
    let small = format!("[{}]", vec![call.trim_end_matches(','); 100].join(","));
    let answers = request("POST", &manager.url("/rpc"), &[], Some(small.into_bytes())).json();
    report(&format!(
        "4 JSON-RPC batches of 500,000 pings (23 MB) at once: {} refused with -32600; RSS {} kB before, peak {peak_kb} kB, {} kB after",
        replies.iter().filter(|r| r.status == 400 && r.json()["error"]["code"] == -32600).count(),
        before.rss_kb,
        after.rss_kb
    ));
    for reply in &replies {
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert_eq!(reply.json()["error"]["code"], -32600);
    }
    assert_eq!(answers.as_array().map(Vec::len), Some(100));
    assert!(peak_kb < 300_000, "peak RSS {peak_kb} kB");
    assert!(after.rss_kb < before.rss_kb + 100_000, "{after:?}");
}

/// A rack-mode manager on `rack_port` whose API keys are `keys`.
fn rack(rack_port: u16, keys: &[&str]) -> Manager {
    let manager = Setup::new()
        .set("rack", "port", json!(rack_port))
        .set("server", "apiKeys", json!(keys))
        .set("server", "readTimeoutMs", json!(1000))
        .set("server", "requestTimeoutMs", json!(3000))
        .args(&["--mode", "rack"])
        .start();
    let announced = format!("rack RPC listening on tcp://127.0.0.1:{rack_port}");
    assert!(manager.wait_log(&announced), "{}", manager.log_text());
    manager
}

/// Sends `line` on a fresh rack connection and reads one answer line.
fn rack_ask(rack_port: u16, line: &str) -> serde_json::Value {
    let mut stream = TcpStream::connect(("127.0.0.1", rack_port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(format!("{line}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stream), &mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
}

#[test]
fn rack_mode_asks_for_a_key_when_keys_are_set() {
    let rack_port = free_port_base();
    let manager = rack(rack_port, &["k-rack"]);
    manager.wait_healthy_with_key(2, "k-rack");
    let load = r#"{"jsonrpc":"2.0","id":1,"method":"loadModel","params":{"modelId":"default"}}"#;
    let refused = rack_ask(rack_port, load);
    let with_key = rack_ask(
        rack_port,
        r#"{"jsonrpc":"2.0","id":2,"method":"ping","auth":"k-rack"}"#,
    );
    report(&format!(
        "rack mode with server.apiKeys set and rack.allow empty: loadModel without a token -> {}",
        refused["error"]["message"]
    ));
    assert_eq!(refused["error"]["message"], "ERR_UNAUTHORIZED", "{refused}");
    assert_eq!(with_key["result"]["pong"], true, "{with_key}");
}

#[test]
fn slow_and_idle_rack_connections_hold_up_nobody() {
    let rack_port = free_port_base();
    let manager = rack(rack_port, &[]);
    manager.wait_healthy(2);
    let pid = manager.child.id();
    let before = usage(pid);
    // 100 idle connections, and 8 that send `{` and then a byte every 500 ms.
    let _idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(("127.0.0.1", rack_port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let with_idle = usage(pid);
    let mut slow: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = TcpStream::connect(("127.0.0.1", rack_port)).unwrap();
            s.write_all(b"{").unwrap();
            s
        })
        .collect();
    let (answered, cut) = std::thread::scope(|scope| {
        let trickle = scope.spawn(|| {
            let mut cut = 0;
            for _ in 0..12 {
                std::thread::sleep(Duration::from_millis(500));
                cut = slow
                    .iter_mut()
                    .map(|s| s.write_all(b" ").is_err())
                    .filter(|failed| *failed)
                    .count();
            }
            cut
        });
        let started = Instant::now();
        let ping = rack_ask(rack_port, r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
        assert_eq!(ping["result"]["pong"], true, "{ping}");
        let answered = started.elapsed();
        (answered, trickle.join().unwrap())
    });
    report(&format!(
        "rack mode, 100 idle and 8 trickling connections: threads {} -> {} with the idle ones; a ping answered in {answered:?}; \
         {cut} of the 8 cut off at the 3 s message deadline",
        before.threads, with_idle.threads
    ));
    // A thread per idle connection would add 100; the margin is for the manager's own
    // short-lived threads (health probes, log pumps), which a sample can catch (36 seen once).
    assert!(
        with_idle.threads < before.threads + 20,
        "idle connections own threads: {before:?} -> {with_idle:?}"
    );
    assert!(answered < Duration::from_secs(2), "{answered:?}");
    assert_eq!(cut, 8, "the trickling connections were never cut off");
}

#[test]
fn an_endless_header_line_is_refused_and_costs_no_memory() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let pid = manager.child.id();
    let before = usage(pid);
    let (sent, answer) = endless_header(manager.port, Duration::from_secs(3));
    let after = usage(pid);
    // A head trickled a byte at a time (below readTimeoutMs) is not cut off in the manager:
    // only a proxy bounds the time a head may take (README "Deployment").
    let mut slow = connect_with(manager.port, b"GET /health HTTP/1.1\r\n");
    let trickled = (0..6).all(|_| {
        std::thread::sleep(Duration::from_millis(500));
        slow.write_all(b"X").is_ok()
    });
    report(&format!(
        "endless header line, 3 s: {} kB taken, then {:?}; RSS {} kB -> {} kB; a head trickled for 3 s still open: {trickled}",
        sent / 1024,
        answer.lines().next().unwrap_or("closed"),
        before.rss_kb,
        after.rss_kb
    ));
    assert!(
        answer.starts_with("HTTP/1.1 431") || answer.is_empty(),
        "{answer}"
    );
    assert!(
        after.rss_kb < before.rss_kb + 2048,
        "{before:?} -> {after:?}"
    );
    assert_serving(&manager);
}

/// What comes back for `head` on a connection of its own, to its end (the manager closes it,
/// or 2 s pass).
fn whole_exchange(port: u16, head: &[u8]) -> String {
    let mut stream = connect_with(port, head);
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn a_body_length_given_two_ways_is_refused_and_nothing_after_it_is_served() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    // Each hides a request after a body a proxy in front could have measured the other way.
    let two_lengths = format!(
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nContent-Length: 3\r\n\r\n{ping}\
         GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ping.len()
    );
    let length_and_chunks = format!(
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x}\r\n{ping}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        ping.len()
    );
    for head in [two_lengths, length_and_chunks] {
        let answer = whole_exchange(manager.port, head.as_bytes());
        report(&format!(
            "body length given two ways: {:?}",
            answer.lines().next()
        ));
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "one answer: {answer}"
        );
    }
    // The same value twice says one length.
    let repeated = format!(
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Length: {0}\r\nContent-Length: {0}\r\n\
         Connection: close\r\n\r\n{ping}",
        ping.len()
    );
    let answer = whole_exchange(manager.port, repeated.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!manager.settled_log().contains("/smuggled"));
    assert_serving(&manager);
}

#[test]
fn a_byte_past_ascii_in_the_head_is_answered_400() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    for head in [
        &b"GET /health HTTP/1.1\r\nUser-Agent: caf\xc3\xa9\r\n\r\n"[..],
        &b"GET /h\xffalth HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let answer = whole_exchange(manager.port, head);
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    }
    assert_serving(&manager);
}

#[test]
fn malformed_request_lines_are_answered_400_at_once() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    for head in [
        // Bare LF line ends (as `nc` without -C sends): upstream waited for a CRLF until the
        // read timeout, with no answer.
        &b"GET /health HTTP/1.1\nHost: x\n\n"[..],
        &b"GET /health HTTP/1.1\r\nHost: x\n\r\n"[..],
        // A method that is not a token.
        &b"G(T /health HTTP/1.1\r\nHost: x\r\n\r\n"[..],
    ] {
        let started = Instant::now();
        let answer = whole_exchange(manager.port, head);
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?}: {answer:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "{head:?}");
    }
    // A target in absolute form is served as its path (RFC 9112 section 3.2.2).
    let answer = whole_exchange(
        manager.port,
        b"GET http://example.com/livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    assert_serving(&manager);
}

/// Everything `stream` gives until it ends or is silent for 5 s.
fn rest_of(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    String::from_utf8_lossy(&rest).into_owned()
}

#[test]
fn a_body_that_broke_off_closes_its_connection_and_nothing_after_it_is_served() {
    let manager = Setup::new()
        .set("server", "readTimeoutMs", json!(1000))
        .stub(&["--delay-ms", "300"])
        .start();
    manager.wait_healthy(2);
    // A transcription, and behind it on the same connection a chunked body that stops
    // mid-chunk: the first is answered as usual, the second 408 after the read timeout,
    // announced as the connection's last answer.
    let inference = json!({ "inputData": b64(&wav(1600, 1)) }).to_string();
    let mut stream = connect_with(
        manager.port,
        format!(
            "POST /api/inference/default HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{inference}\
             POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n{{\"json",
            inference.len()
        )
        .as_bytes(),
    );
    std::thread::sleep(Duration::from_millis(2500));
    // Sent after the 408, inside the chunk it left unfinished: upstream served it.
    let _ = stream.write_all(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    let answers = rest_of(&mut stream);
    let statuses: Vec<&str> = answers
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answers[at..at + 12])
        .collect();
    assert_eq!(statuses, ["HTTP/1.1 200", "HTTP/1.1 408"], "{answers}");
    assert_eq!(
        answers.matches("Connection: close\r\n").count(),
        1,
        "{answers}"
    );
    assert!(!manager.settled_log().contains("/smuggled"));
    assert_serving(&manager);
}

#[test]
fn a_chunked_body_answered_unread_ends_its_connection() {
    let key = "k-chunks";
    let manager = Setup::new().set("server", "apiKeys", json!([key])).start();
    manager.wait_healthy_with_key(2, key);
    // No key: 401 without reading the body. Its chunks, and the request hidden after them,
    // were read as the next requests (upstream answered the chunk-size line with a second,
    // 400, answer a client's connection pool would take for its next request's).
    let mut stream = connect_with(
        manager.port,
        b"POST /api/inference/default HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let answers = rest_of(&mut stream);
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 1, "{answers}");
    assert!(answers.starts_with("HTTP/1.1 401"), "{answers}");
    assert!(answers.contains("Connection: close\r\n"), "{answers}");
    assert!(!manager.settled_log().contains("/smuggled"));
}

#[test]
fn a_chunked_body_past_the_limit_gets_413_and_ends_its_connection() {
    let manager = Setup::new()
        .set("server", "maxBodyBytes", json!(1000))
        .start();
    manager.wait_healthy(2);
    let mut head = b"POST /rpc HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        head.extend_from_slice(b"3e8\r\n");
        head.extend_from_slice(&[b' '; 1000]);
        head.extend_from_slice(b"\r\n");
    }
    let mut stream = connect_with(manager.port, &head);
    let answers = rest_of(&mut stream);
    assert!(answers.starts_with("HTTP/1.1 413"), "{answers}");
    assert!(answers.contains("Connection: close\r\n"), "{answers}");
    assert_eq!(answers.matches("HTTP/1.1 ").count(), 1, "{answers}");
}

/// `seconds` of 1 kHz 8-bit mono WAV: a kilobyte a second, which decodes to 32 (16 kHz, 16-bit).
fn thin_wav(seconds: u32) -> Vec<u8> {
    let data: Vec<u8> = (0..seconds * 1000).map(|i| (i % 200) as u8 + 28).collect();
    let mut wav = b"RIFF".to_vec();
    wav.extend((36 + data.len() as u32).to_le_bytes());
    wav.extend(b"WAVEfmt ");
    for field in [
        16u32.to_le_bytes(),
        [1, 0, 1, 0],
        1000u32.to_le_bytes(),
        1000u32.to_le_bytes(),
        [1, 0, 8, 0],
    ] {
        wav.extend(field);
    }
    wav.extend(b"data");
    wav.extend((data.len() as u32).to_le_bytes());
    wav.extend(data);
    wav
}

#[test]
fn uploads_that_decode_big_are_held_to_the_memory_budget() {
    let manager = Setup::new()
        .stub(&["--delay-ms", "2000"])
        .set("audio", "maxSeconds", json!(60))
        .set("audio", "maxSecondsInMemory", json!(90))
        .start();
    manager.wait_healthy(2);
    let minute = thin_wav(60);
    let before = usage(manager.child.id());
    std::thread::scope(|scope| {
        // 60 KB that decode to 1.9 MB, transcribed in 2 chunks on 2 workers of 2 s.
        let first = scope.spawn(|| manager.transcribe(&minute));
        let running = wait_for(Duration::from_secs(5), || {
            if first.is_finished() {
                return Some(());
            }
            let status = manager.status();
            let runs = status["transcriptions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            (!runs.is_empty()).then_some(())
        });
        assert!(running.is_some(), "{}", manager.status());
        assert!(
            !first.is_finished(),
            "the first upload ran no longer than it took to send the second"
        );
        let second = manager.transcribe(&minute);
        report(&format!(
            "a second 60 s upload beside one held: {} {}",
            second.status,
            second.text()
        ));
        assert_eq!(second.status, 503, "{}", second.text());
        assert_eq!(second.json()["code"], "CAPACITY_EXCEEDED");
        assert!(second.text().contains("audio.maxSecondsInMemory"));
        assert_eq!(first.join().unwrap().status, 200);
    });
    assert_eq!(
        manager.transcribe(&minute).status,
        200,
        "the first gave its share back"
    );
    let after = usage(manager.child.id());
    report(&format!("RSS {} kB -> {} kB", before.rss_kb, after.rss_kb));
    assert_serving(&manager);
}
