//! The command line, settings and lifecycle (README "Command line", "Configuration" and
//! "Behaviour under failure"): exit codes, settings precedence and errors, worker logs,
//! graceful shutdown, orphan reaping.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Runs the binary to completion in `dir`'s XDG dirs: (exit code, stdout, stderr).
fn run(dir: &TempDir, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let output = command(&dir.0, &env, &[])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn settings_file(dir: &TempDir) -> std::path::PathBuf {
    dir.0.join("config/transcription_manager/settings.json5")
}

fn write_settings(dir: &TempDir, text: &str) {
    std::fs::create_dir_all(settings_file(dir).parent().unwrap()).unwrap();
    std::fs::write(settings_file(dir), text).unwrap();
}

#[test]
fn help_version_and_bad_usage() {
    let dir = TempDir::new("cli");
    let (code, out, _) = run(&dir, &["--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("config path|show|init|edit") && out.contains("check"));
    let (code, out, _) = run(&dir, &["--version"], &[]);
    assert_eq!(
        (code, out.trim()),
        (
            0,
            format!("inference-server-manager {}", env!("CARGO_PKG_VERSION")).as_str()
        )
    );
    let (code, _, err) = run(&dir, &["--frobnicate"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown option"), "{err}");
    let (code, _, _) = run(&dir, &["--port", "http"], &[]);
    assert_eq!(code, 2);
}

#[test]
fn config_path_init_and_show_with_precedence() {
    let dir = TempDir::new("config");
    let (_, path, _) = run(&dir, &["config", "path"], &[]);
    assert_eq!(path.trim(), settings_file(&dir).to_str().unwrap());
    let (code, _, _) = run(&dir, &["config", "init"], &[]);
    assert_eq!(code, 0);
    let written = std::fs::read_to_string(settings_file(&dir)).unwrap();
    assert!(written.starts_with("//") && written.contains("\"poolSize\": 3"));
    // file < env < flag
    write_settings(
        &dir,
        "{ server: { port: 1111, host: '127.0.0.1' }, workers: { poolSize: 2 } }",
    );
    let show = |env: &[(&str, &str)], args: &[&str]| -> Value {
        let mut all = vec!["config", "show"];
        all.extend(args);
        let (code, out, err) = run(&dir, &all, env);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    assert_eq!(show(&[], &[])["server"]["port"], 1111);
    assert_eq!(show(&[], &[])["workers"]["poolSize"], 2);
    assert_eq!(
        show(&[], &[])["workers"]["rotateThreshold"],
        25,
        "defaults fill the rest"
    );
    assert_eq!(
        show(&[("TRANSCRIPTION_MANAGER_PORT", "2222")], &[])["server"]["port"],
        2222
    );
    assert_eq!(
        show(
            &[
                ("INFERENCE_SERVER_PORT", "3333"),
                ("TRANSCRIPTION_MANAGER_PORT", "2222")
            ],
            &[]
        )["server"]["port"],
        3333
    );
    assert_eq!(
        show(&[("INFERENCE_SERVER_PORT", "3333")], &["--port", "4444"])["server"]["port"],
        4444
    );
    let shown = show(
        &[
            ("INFERENCE_SERVER_API_KEYS", "secret1,secret2"),
            ("WHISPER_SERVER_ARGS", "-t 2 --x"),
        ],
        &[],
    );
    assert_eq!(shown["server"]["apiKeys"], json!(["***", "***"]));
    assert_eq!(shown["whisperServer"]["args"], json!(["-t", "2", "--x"]));
}

#[test]
fn a_bad_settings_file_exits_2_naming_file_line_and_key() {
    let dir = TempDir::new("badsettings");
    write_settings(&dir, "{\n  workers: {\n    poolSize: 'three',\n  },\n}\n");
    let (code, _, err) = run(
        &dir,
        &["serve", "--port", "0"],
        &[("WHISPER_SERVER_CMD", STUB)],
    );
    assert_eq!(code, 2);
    let expected = format!(
        "{}:3: workers.poolSize: expected a whole number",
        settings_file(&dir).display()
    );
    assert!(err.contains(&expected), "{err}");
    write_settings(&dir, "{ workers: { poolSize: 2 ");
    let (code, _, err) = run(&dir, &["check"], &[("WHISPER_SERVER_CMD", STUB)]);
    assert_eq!(code, 2);
    assert!(
        err.contains("settings.json5:1:") && err.contains("JSON5"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_warned_about_and_ignored() {
    let dir = TempDir::new("unknown");
    write_settings(&dir, "{ workers: { poolSize: 1, colour: 'red' } }");
    let (code, out, err) = run(&dir, &["check"], &[("WHISPER_SERVER_CMD", STUB)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("unknown key `workers.colour` is ignored"),
        "{err}"
    );
    assert!(out.contains("1 worker(s)"), "{out}");
}

#[test]
fn no_worker_command_exits_2_and_says_how_to_set_one() {
    let dir = TempDir::new("nocmd");
    let (code, _, err) = run(&dir, &["serve", "--port", "0"], &[]);
    assert_eq!(code, 2);
    for needle in [
        "whisperServer.cmd",
        "WHISPER_SERVER_CMD",
        "scripts/setup-whisper.sh",
    ] {
        assert!(err.contains(needle), "{needle} missing from: {err}");
    }
    assert!(
        settings_file(&dir).exists(),
        "serve wrote the defaults on first run"
    );
    let (code, _, err) = run(
        &dir,
        &["check"],
        &[("WHISPER_SERVER_CMD", "/nonexistent/whisper-server")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent/whisper-server"), "{err}");
}

#[test]
fn a_worker_flooding_its_output_loses_no_line_and_keeps_serving() {
    // A shell script in front of the stub prints 100,000 numbered lines as fast as `seq` can
    // (far more than the pipe holds, so it waits for the pump), then serves.
    const LINES: usize = 100_000;
    let scratch = TempDir::new("flood");
    let script = scratch.0.join("flooding-worker.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nseq -f 'flood line %.0f' 1 {LINES}\nexec {STUB} \"$@\"\n"),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let manager = Setup::new()
        .pool(1)
        .env("WHISPER_SERVER_CMD", script.to_str().unwrap())
        .start();
    let status = manager.wait_healthy(1);
    assert_eq!(manager.transcribe(&wav(100, 1)).status, 200);
    // The pump writes what gathered up to 10 ms after it came: the last line may follow.
    manager.wait_worker_logs(&format!("] [stdout] flood line {LINES}\n"));
    let text = manager.worker_log(&workers(&status)[0]["port"]);
    let flood: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split_once("] [stdout] flood line ").map(|(_, n)| n))
        .collect();
    assert_eq!(flood.len(), LINES, "lines lost or doubled");
    assert!(
        flood.iter().zip(1..).all(|(n, i)| n.parse() == Ok(i)),
        "lines out of order"
    );
    assert!(
        text.lines().all(|line| line.starts_with("[20")),
        "an entry without its time"
    );
}

#[test]
fn worker_output_goes_to_timestamped_log_files_not_the_console() {
    let manager = Setup::new().start();
    let status = manager.wait_healthy(2);
    assert_eq!(manager.transcribe(&wav(100, 1)).status, 200);
    for worker in workers(&status) {
        let text = manager.worker_log(&worker["port"]);
        let line = text.lines().next().unwrap();
        assert!(
            line.starts_with("[20") && line.contains("Z] [stdout] stub-whisper-server listening"),
            "{line}"
        );
    }
    assert!(
        !manager
            .settled_log()
            .contains("stub-whisper-server listening"),
        "worker output leaked to the console"
    );
}

#[test]
fn graceful_shutdown_finishes_requests_and_leaves_no_process_behind() {
    let mut manager = Setup::new().stub(&["--delay-ms", "1000"]).start();
    manager.wait_healthy(2);
    let pids = manager.worker_pids();
    let url = manager.url("/api/v1/transcriptions");
    let audio = wav(100, 5);
    let in_flight = std::thread::spawn(move || {
        request(
            "POST",
            &url,
            &[],
            Some(transcription(&audio).to_string().into_bytes()),
        )
    });
    manager.busy_worker();
    let exit = manager.terminate();
    assert!(exit.success(), "{exit:?}");
    let reply = in_flight.join().unwrap();
    assert_eq!(
        reply.status,
        200,
        "the in-flight request finished: {}",
        reply.text()
    );
    for pid in pids {
        assert!(!alive(pid), "worker {pid} outlived the manager");
    }
    let records = std::fs::read_dir(manager.data_dir().join("pids"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "pid records removed");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", manager.port)).is_err(),
        "port closed"
    );
}

/// Processes in process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let group: u32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(2)?
                .parse()
                .ok()?;
            (group == pgid && alive(pid)).then_some(pid)
        })
        .collect()
}

#[test]
fn workers_die_with_a_killed_manager() {
    let mut manager = Setup::new().start();
    let pids: Vec<u32> = workers(&manager.wait_healthy(2))
        .iter()
        .map(pid_of)
        .collect();
    // SIGKILL, and nobody starts the manager again.
    manager.child.kill().unwrap();
    manager.child.wait().unwrap();
    let gone = wait_for(Duration::from_secs(5), || {
        (!pids.iter().any(|pid| alive(*pid))).then_some(())
    });
    report(&format!(
        "manager SIGKILLed: its workers {pids:?} {}",
        if gone.is_some() {
            "died with it"
        } else {
            "outlived it"
        }
    ));
    assert!(gone.is_some(), "workers outlived a SIGKILLed manager");
}

#[test]
fn orphans_of_a_killed_manager_are_reaped_on_the_next_start() {
    // The worker command is a wrapper script that starts the worker as its child (no exec),
    // as an interpreter would: the child is no longer the recorded program, and it does not
    // die with the manager.
    let scripts = TempDir::new("wrapper");
    let wrapper = scripts.0.join("whisper-wrapper.sh");
    std::fs::write(&wrapper, format!("#!/bin/sh\n\"{STUB}\" \"$@\" &\nwait\n")).unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let wrapper = wrapper.to_str().unwrap().to_string();
    let setup = Setup::new().env("WHISPER_SERVER_CMD", &wrapper);
    let settings = setup.settings.clone();
    let mut manager = setup.start();
    let groups: Vec<u32> = workers(&manager.wait_healthy(2))
        .iter()
        .map(pid_of)
        .collect();
    manager.child.kill().unwrap();
    manager.child.wait().unwrap();
    // The wrappers die with the manager; the workers they started live on in their groups.
    let orphans: Vec<u32> = wait_for(Duration::from_secs(5), || {
        let left: Vec<u32> = groups.iter().flat_map(|g| group_members(*g)).collect();
        (left.len() == 2 && groups.iter().all(|g| !alive(*g))).then_some(left)
    })
    .unwrap_or_else(|| panic!("expected two orphaned workers in groups {groups:?}"));
    // Hand the XDG dirs to the next manager; this one must not clean up the orphans itself.
    let dir = std::mem::replace(&mut manager.dir, TempDir::new("placeholder"));
    manager.seen_pids.lock().unwrap().clear();
    drop(manager);
    let started = Instant::now();
    let next = Manager::start(
        Setup {
            settings,
            ..Setup::new().env("WHISPER_SERVER_CMD", &wrapper)
        },
        dir,
    );
    let port_open = started.elapsed();
    assert!(next.wait_log("reaped 2 worker(s)"), "{}", next.log_text());
    let reaped = started.elapsed();
    report(&format!(
        "orphans of wrapper scripts {orphans:?}: port open after {port_open:?}, reaped after {reaped:?}"
    ));
    for pid in &orphans {
        assert!(!alive(*pid), "orphan {pid} survived the next start");
    }
    next.wait_healthy(2);
    for group in groups {
        for pid in group_members(group) {
            signal(pid, "KILL");
        }
    }
}

#[test]
fn a_second_manager_on_the_same_data_dir_refuses_and_leaves_the_first_alone() {
    let first = Setup::new().start();
    let pids: Vec<u32> = workers(&first.wait_healthy(2)).iter().map(pid_of).collect();
    let config = TempDir::new("second");
    let output = command(&config.0, &[], &[])
        .env("XDG_DATA_HOME", first.data_dir().parent().unwrap())
        .env("WHISPER_SERVER_CMD", STUB)
        .args(["serve", "--port", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("another manager already runs on this data directory"),
        "{stderr}"
    );
    for pid in &pids {
        assert!(alive(*pid), "worker {pid} of the first manager was killed");
    }
    assert_eq!(recorded_pids(&first.data_dir()).len(), 2);
    first.wait_healthy(2);
}

#[test]
fn a_slot_recovers_when_its_command_starts_working() {
    let blocker = TempDir::new("blocker");
    let flag = blocker.0.join("fail");
    std::fs::write(&flag, "").unwrap();
    let manager = Setup::new()
        .pool(1)
        .stub(&["--fail-if-exists", flag.to_str().unwrap()])
        .start();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(manager.get("/health").status, 503);
    std::fs::remove_file(&flag).unwrap();
    let status = manager.wait_healthy(1);
    assert!(status["workers"][0]["restarts"].as_u64().unwrap() >= 1);
    assert_eq!(manager.get("/health").status, 200);
}

#[test]
fn the_listener_comes_back_after_file_descriptors_run_out() {
    // With at most 64 open files, enough idle connections exhaust the fd table, which ends
    // tiny_http's accept thread for good (an accept error, or a panic cloning the socket).
    let manager = Setup::new()
        .pool(1)
        .launcher(&["prlimit", "--nofile=64:64", "--"])
        .start();
    manager.wait_healthy(1);
    let mut held = Vec::new();
    for _ in 0..200 {
        match std::net::TcpStream::connect(("127.0.0.1", manager.port)) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        manager.wait_log("binding a new"),
        "the dead listener was noticed:\n{}",
        manager.log_text()
    );
    drop(held);
    assert!(
        manager.wait_log("listening again on"),
        "{}",
        manager.log_text()
    );
    assert!(
        wait_ok(&manager.url("/health")),
        "the service never came back:\n{}",
        manager.log_text()
    );
    assert_eq!(manager.transcribe(&wav(100, 1)).status, 200);
}

#[test]
fn a_public_address_without_keys_is_warned_about_and_workers_stay_on_loopback() {
    let manager = Setup::new().set("server", "host", json!("0.0.0.0")).start();
    let status = manager.wait_healthy(2);
    let warning = "listening on 0.0.0.0 with no API keys";
    assert!(manager.wait_log(warning), "{}", manager.log_text());
    for worker in workers(&status) {
        let log = manager.worker_log(&worker["port"]);
        assert!(
            log.contains(&format!("listening on http://127.0.0.1:{}", worker["port"])),
            "{log}"
        );
    }
    drop(manager);
    let keyed = Setup::new()
        .set("server", "host", json!("0.0.0.0"))
        .env("INFERENCE_SERVER_API_KEYS", "k")
        .start();
    assert!(!keyed.settled_log().contains(warning));
}
