//! What the proxy in front adds (README "Deployment"): nginx and HAProxy with the settings
//! the README ships, in front of a manager, against the attacks only a proxy can stop in
//! time: an endless header line, a head trickled a byte at a time, an upload that stalls.
//! Ignored by default: they need `nginx` (Debian `nginx-light`) and `haproxy`, which
//! `.ci/run` installs.

mod support;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use support::procfs::usage;
use support::*;

/// The head timeout of both proxies in these tests (the README's configurations say 10 s).
const HEAD_TIMEOUT_S: u64 = 2;

/// The README's nginx settings for hostile clients, with test-sized timeouts.
fn nginx_config(dir: &TempDir, front: u16, manager: u16) -> String {
    let d = dir.0.display();
    format!(
        "worker_processes 1; error_log {d}/error.log; pid {d}/nginx.pid; events {{ worker_connections 1024; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/f; uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n\
         client_header_timeout {HEAD_TIMEOUT_S}s; client_body_timeout {HEAD_TIMEOUT_S}s; send_timeout 10s;\n\
         keepalive_timeout 15s; large_client_header_buffers 4 8k; client_max_body_size 100m;\n\
         upstream managers {{ server 127.0.0.1:{manager}; }}\n\
         server {{ listen 127.0.0.1:{front};\n\
         location / {{ proxy_pass http://managers; proxy_request_buffering on; proxy_read_timeout 150s; }} }} }}\n"
    )
}

/// The README's HAProxy settings for hostile clients, with test-sized timeouts.
fn haproxy_config(front: u16, manager: u16) -> String {
    format!(
        "global\n  maxconn 512\n  tune.bufsize 16384\n\
         defaults\n  mode http\n  timeout connect 1s\n  timeout client 10s\n  timeout server 150s\n\
         \x20 timeout http-request {HEAD_TIMEOUT_S}s\n  timeout http-keep-alive 15s\n  option http-buffer-request\n\
         frontend transcription\n  bind 127.0.0.1:{front}\n  default_backend managers\n\
         backend managers\n  server m1 127.0.0.1:{manager}\n"
    )
}

/// Sends `head` and then, when `trickling`, a byte every 300 ms; returns how long the proxy
/// kept the connection open.
fn hold_open(port: u16, head: &[u8], trickling: bool) -> Duration {
    let mut stream = connect_with(port, head);
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => break, // an answer (408) before the close
            Err(_) => {}
        }
        if trickling && stream.write_all(b"a").is_err() {
            break;
        }
    }
    started.elapsed()
}

/// Runs the attacks through the proxy listening on `front` in front of `manager`.
fn attack_through(name: &str, front: u16, manager: &Manager) {
    let url = format!("http://127.0.0.1:{front}");
    assert!(wait_ok(&format!("{url}/health")), "{name} never answered");
    let audio = wav(300, 5);
    let reply = request(
        "POST",
        &format!("{url}/api/v1/transcriptions"),
        &[("Content-Type", "application/json")],
        Some(transcription(&audio).to_string().into_bytes()),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let pid = manager.child.id();
    let before = usage(pid);
    let (_, header) = endless_header(front, Duration::from_secs(3));
    let header = header.lines().next().unwrap_or("").to_string();
    let slow_head = hold_open(front, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ", true);
    let slow_body = hold_open(
        front,
        b"POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        false,
    );
    let after = usage(pid);
    report(&format!(
        "{name} in front: endless header line -> {header:?}; a head trickled a byte per 300 ms cut after {slow_head:?}; \
         a stalled upload cut after {slow_body:?}; manager RSS {} kB -> {} kB, threads {} -> {}",
        before.rss_kb, after.rss_kb, before.threads, after.threads
    ));
    assert!(
        header.starts_with("HTTP/1.1 4") || header.is_empty(),
        "{header}"
    );
    let limit = Duration::from_secs(HEAD_TIMEOUT_S + 3);
    assert!(slow_head < limit, "{slow_head:?}");
    assert!(slow_body < limit, "{slow_body:?}");
    // The endless line alone grew an unprotected manager by ~130 MB/s.
    assert!(
        after.rss_kb < before.rss_kb + 16_384,
        "{before:?} -> {after:?}"
    );
    let log = manager.settled_log();
    assert!(
        !log.contains("X-Big"),
        "the endless header reached the manager"
    );
}

#[test]
#[ignore = "needs nginx (apt-get install nginx-light)"]
fn nginx_stops_what_the_manager_cannot_in_time() {
    needs::program("nginx", "apt-get install nginx-light");
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let dir = TempDir::new("nginx-front");
    let front = free_port_base();
    std::fs::write(
        dir.0.join("nginx.conf"),
        nginx_config(&dir, front, manager.port),
    )
    .unwrap();
    let _nginx = nginx(&dir.0);
    attack_through("nginx", front, &manager);
}

#[test]
#[ignore = "needs haproxy (apt-get install haproxy)"]
fn haproxy_stops_what_the_manager_cannot_in_time() {
    needs::program("haproxy", "apt-get install haproxy");
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let dir = TempDir::new("haproxy-front");
    let front = free_port_base();
    let config = dir.0.join("haproxy.cfg");
    std::fs::write(&config, haproxy_config(front, manager.port)).unwrap();
    let _proxy = Spawned::start(Command::new("haproxy").arg("-db").arg("-f").arg(&config));
    attack_through("haproxy", front, &manager);
}
