//! Beyond one machine: HAProxy in front of two managers, health-checking `/health`; one manager
//! is SIGKILLed under load and no client sees an error. Ignored by default: it needs `haproxy`
//! (Debian package), which `.ci/run` installs.

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

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

#[test]
#[ignore = "needs haproxy (apt-get install haproxy)"]
fn haproxy_hides_a_manager_killed_under_load() {
    needs::program("haproxy", "apt-get install haproxy");
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
    let _proxy = Spawned::start(Command::new("haproxy").arg("-db").arg("-f").arg(&config));
    let front = format!("http://127.0.0.1:{port}");
    assert!(
        wait_ok(&format!("{front}/health")),
        "haproxy never answered"
    );
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
        spread(4, REQUESTS, |i| {
            sent.fetch_add(1, Ordering::SeqCst);
            let audio = wav(300 + i as u32, i as u16);
            let reply = request(
                "POST",
                &format!("{front}/api/v1/transcriptions"),
                &[("Content-Type", "application/json")],
                Some(transcription(&audio).to_string().into_bytes()),
            );
            assert_eq!(
                reply.status,
                200,
                "request {i} through HAProxy: {}",
                reply.text()
            );
            assert_eq!(reply.json()["result"]["text"], stub_text(&audio));
        })
        .len()
    });
    report(&format!("haproxy: {REQUESTS} sent through two managers, one SIGKILLed a quarter of the way: {ok} succeeded, {} failed", REQUESTS - ok));
    assert_eq!(ok, REQUESTS);
}
