//! Beyond one machine: HAProxy in front of two managers, health-checking `/health`; one manager
//! is SIGKILLed under load and no client sees an error. Needs `haproxy` (Debian package);
//! gated by `ISM_HAPROXY`, which `.ci/run` sets after installing it.

mod support;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use support::*;

/// The configuration the README recommends, on test ports and with test-sized intervals.
fn haproxy_config(port: u16, backends: &[u16]) -> String {
    let servers: String = backends
        .iter()
        .enumerate()
        .map(|(i, p)| format!("  server m{i} 127.0.0.1:{p} check\n"))
        .collect();
    format!(
        "global\n  maxconn 512\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 60s\n  timeout server 60s\n\
         \x20 retries 3\n  option redispatch 1\n  retry-on all-retryable-errors\n  option http-buffer-request\n\
         frontend transcription\n  bind 127.0.0.1:{port}\n  default_backend managers\n\
         backend managers\n  balance roundrobin\n  option httpchk GET /health\n  http-check expect status 200\n\
         \x20 default-server inter 200ms fall 1 rise 2\n{servers}"
    )
}

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn haproxy_hides_a_manager_killed_under_load() {
    if std::env::var_os("ISM_HAPROXY").is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: the HAProxy test needs ISM_HAPROXY=1 and haproxy installed"
        );
        return;
    }
    let managers: Vec<Manager> = (0..2)
        .map(|_| Setup::new().stub(&["--delay-ms", "20"]).start())
        .collect();
    for manager in &managers {
        manager.wait_healthy(2);
    }
    let dir = TempDir::new("haproxy");
    let port = free_port_base();
    let config = dir.0.join("haproxy.cfg");
    std::fs::write(
        &config,
        haproxy_config(port, &[managers[0].port, managers[1].port]),
    )
    .unwrap();
    let _proxy = Proxy(
        Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy runs"),
    );
    let front = format!("http://127.0.0.1:{port}");
    wait_for(SOON, || {
        (try_request("GET", &format!("{front}/health"))?.status == 200).then_some(())
    })
    .expect("haproxy never answered");
    std::thread::sleep(Duration::from_millis(600)); // both backends up (rise 2)

    const REQUESTS: usize = 200;
    let sent = AtomicUsize::new(0);
    let victim = managers[0].child.id();
    let ok = std::thread::scope(|scope| {
        scope.spawn(|| {
            wait_for(SOON, || {
                (sent.load(Ordering::SeqCst) >= REQUESTS / 4).then_some(())
            });
            signal(victim, "KILL");
        });
        let clients: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let mut ok = 0;
                    loop {
                        let i = sent.fetch_add(1, Ordering::SeqCst);
                        if i >= REQUESTS {
                            return ok;
                        }
                        let audio = wav(300 + i as u32, i as u16);
                        let body = json!({ "content": b64(&audio), "timestamps": false })
                            .to_string()
                            .into_bytes();
                        let reply = request(
                            "POST",
                            &format!("{front}/api/v1/transcriptions"),
                            &[("Content-Type", "application/json")],
                            Some(body),
                        );
                        assert_eq!(
                            reply.status,
                            200,
                            "request {i} through HAProxy: {}",
                            reply.text()
                        );
                        assert_eq!(reply.json()["result"]["text"], stub_text(&audio));
                        ok += 1;
                    }
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().unwrap())
            .sum::<usize>()
    });
    let _ = writeln!(std::io::stderr(), "haproxy: {REQUESTS} sent through two managers, one SIGKILLed a quarter of the way: {ok} succeeded, {} failed", REQUESTS - ok);
    assert_eq!(ok, REQUESTS);
}
