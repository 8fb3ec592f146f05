//! Bad input on purpose: every kind gets a clear 4xx JSON error and the service keeps serving.

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

fn post_raw(manager: &Manager, body: &[u8]) -> Reply {
    request(
        "POST",
        &manager.url("/api/v1/transcriptions"),
        &[("Content-Type", "application/json")],
        Some(body.to_vec()),
    )
}

/// The service still transcribes after whatever the test did.
fn assert_still_serving(manager: &Manager) {
    let audio = wav(300, 11);
    let reply = manager.transcribe(&audio);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["result"]["text"], stub_text(&audio));
}

#[test]
fn malformed_bodies_get_400_invalid_request() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let not_audio = b64(b"this is plain text, not a RIFF file at all");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("malformed JSON", b"{\"content\": ".to_vec()),
        ("not JSON at all", b"\x00\xff\xfe garbage".to_vec()),
        ("JSON array", b"[1,2,3]".to_vec()),
        ("missing content", br#"{"language":"en"}"#.to_vec()),
        ("content not a string", br#"{"content": 12}"#.to_vec()),
        ("empty content", br#"{"content": ""}"#.to_vec()),
        ("bad base64", br#"{"content": "@@@not base64@@@"}"#.to_vec()),
        (
            "not audio",
            json!({ "content": not_audio }).to_string().into_bytes(),
        ),
        (
            "metadata not strings",
            json!({ "content": b64(&wav(10, 1)), "metadata": { "n": 1 } })
                .to_string()
                .into_bytes(),
        ),
        (
            "timestamps not bool",
            json!({ "content": b64(&wav(10, 1)), "timestamps": "yes" })
                .to_string()
                .into_bytes(),
        ),
        ("empty body", Vec::new()),
    ];
    for (what, body) in cases {
        let reply = post_raw(&manager, &body);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        assert_eq!(reply.error_code(), "INVALID_REQUEST", "{what}");
    }
    assert_still_serving(&manager);
}

#[test]
fn an_oversized_body_is_refused_before_it_is_read() {
    let manager = Setup::new()
        .set("server", "maxBodyBytes", json!(100_000))
        .start();
    manager.wait_healthy(2);
    // Only the head is sent: the answer must come without the body.
    let head = b"POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000000\r\n\r\n";
    let answer = raw_exchange(manager.port, head, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    // A client that expects 100-continue is told 413 instead of "continue".
    let expect = b"POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n";
    let answer = raw_exchange(manager.port, expect, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    // A body just over the limit, sent in full, gets the same answer.
    let reply = post_raw(&manager, &vec![b' '; 100_001]);
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (413, "PAYLOAD_TOO_LARGE")
    );
    assert_still_serving(&manager);
}

#[test]
fn an_absurd_content_length_does_not_take_the_service_down() {
    // tiny_http 0.12 would allocate the declared length to drain it and abort the process.
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    for length in [
        "1000000000000",
        "18446744073709551615",
        "99999999999999999999999",
    ] {
        let head = format!(
            "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        );
        let answer = raw_exchange(manager.port, head.as_bytes(), Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 4"), "{length}: {answer}");
    }
    assert_still_serving(&manager);
}

#[test]
fn a_chunked_body_is_bounded_while_it_is_read() {
    let manager = Setup::new()
        .set("server", "maxBodyBytes", json!(50_000))
        .start();
    manager.wait_healthy(2);
    let mut stream = connect_with(
        manager.port,
        b"POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 10_000, "a".repeat(10_000));
    let mut answer = String::new();
    for _ in 0..20 {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_still_serving(&manager);
}

#[test]
fn a_trickling_upload_times_out_with_408() {
    let manager = Setup::new()
        .set("server", "requestTimeoutMs", json!(1000))
        .start();
    manager.wait_healthy(2);
    // Over 64 KiB and under it: what has arrived of a short body is read with its head
    // (README "Request path"), and the same deadline bounds the rest.
    for declared in [100_000, 50_000] {
        let head = format!(
            "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n"
        );
        let mut stream = connect_with(manager.port, head.as_bytes());
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        // One byte every 100 ms: forever, for a server without a deadline.
        let started = Instant::now();
        let mut answer = Vec::new();
        while started.elapsed() < Duration::from_secs(15) {
            if stream.write_all(b"x").is_err() {
                break;
            }
            let mut buf = [0u8; 4096];
            if let Ok(n) = std::io::Read::read(&mut stream, &mut buf) {
                answer.extend_from_slice(&buf[..n]);
                if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{declared}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(10), "{declared}");
    }
    assert_still_serving(&manager);
}

#[test]
fn a_short_body_that_stops_gets_408_with_the_reason() {
    let manager = Setup::new()
        .set("server", "readTimeoutMs", json!(1000))
        .start();
    manager.wait_healthy(2);
    // Part of the body, then silence: the part that came is read with the head, the rest
    // waited for as any body is. (Up to 1 KiB, tiny_http used to wait for the whole body
    // itself and close the connection without an answer.)
    for declared in [500, 50_000] {
        let head = format!(
            "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {declared}\r\n\r\n{{\"content\": \""
        );
        let mut stream = connect_with(manager.port, head.as_bytes());
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let started = Instant::now();
        let mut answer = String::new();
        let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{declared}: {answer}");
        assert!(answer.contains("\"TIMEOUT\""), "{declared}: {answer}");
        assert!(started.elapsed() < Duration::from_secs(5), "{declared}");
    }
    assert_still_serving(&manager);
}

#[test]
fn a_short_body_sent_in_two_parts_arrives_whole() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    // The first half comes with the head and is read with it; the second, 300 ms later, is
    // read by the request thread after it.
    let audio = wav(8000, 31);
    let body = transcription(&audio).to_string();
    assert!(body.len() < 64 * 1024);
    let (first, second) = body.as_bytes().split_at(body.len() / 2);
    let head = format!(
        "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = connect_with(manager.port, &[head.as_bytes(), first].concat());
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(second).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains(&format!("\"text\":\"{}\"", stub_text(&audio))),
        "{answer}"
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    // Three transcriptions and a health check in one write: none is lost or stuck behind the
    // bound on requests a connection has in the server, and the answers come in order.
    let audio: Vec<Vec<u8>> = (0..3u16)
        .map(|i| wav(300 + 100 * u32::from(i), 20 + i))
        .collect();
    let mut all = Vec::new();
    for a in &audio {
        let body = transcription(a).to_string();
        all.extend_from_slice(
            format!(
                "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    all.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut stream = connect_with(manager.port, &all);
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answers = String::new();
    let _ = std::io::Read::read_to_string(&mut stream, &mut answers);
    let found: Vec<usize> = audio
        .iter()
        .map(|a| {
            answers
                .find(&format!("\"text\":\"{}\"", stub_text(a)))
                .unwrap_or_else(|| panic!("no answer for {}: {answers}", stub_text(a)))
        })
        .collect();
    assert!(
        found.windows(2).all(|w| w[0] < w[1]),
        "out of order: {answers}"
    );
    assert_eq!(answers.matches("HTTP/1.1 200").count(), 4, "{answers}");
}

#[test]
fn stalled_uploads_never_starve_health_and_status() {
    // 8 request threads: at most 6 may read bodies, so 2 always remain for small requests.
    let manager = Setup::new()
        .set("server", "threads", json!(8))
        .set("server", "requestTimeoutMs", json!(60_000))
        .start();
    manager.wait_healthy(2);
    // 12 clients announce a body and send none of it.
    let stalled: Vec<TcpStream> = (0..12)
        .map(|_| {
            connect_with(
                manager.port,
                b"POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n",
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        assert_eq!(manager.get("/health").status, 200);
        assert_eq!(manager.get("/api/v1/status").status, 200);
    }
    // Uploads beyond the share were refused at once with a 503, not left hanging.
    let refused = stalled
        .into_iter()
        .filter_map(|mut s| {
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 64];
            std::io::Read::read(&mut s, &mut buf)
                .ok()
                .filter(|n| *n > 0)
                .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .filter(|head| head.starts_with("HTTP/1.1 503"))
        .count();
    assert_eq!(refused, 12 - 6, "all uploads past the share of 6 get 503");
}

#[test]
fn keep_alive_clients_within_the_share_are_never_refused() {
    // 4 request threads: a share of 3 may hold requests with bodies. Three clients each send
    // one request at a time on a keep-alive connection, so at most 3 are ever in the server;
    // each next one comes the moment its client has read the last answer, and must not find
    // that request still holding its share (it did, about once in 5,000: a 503).
    let manager = Setup::new().set("server", "threads", json!(4)).start();
    manager.wait_healthy(2);
    let clients: Vec<_> = (0..3)
        .map(|_| {
            let port = manager.port;
            std::thread::spawn(move || statuses_of_pings_in_a_row(port, 4000))
        })
        .collect();
    for client in clients {
        let statuses = client.join().expect("a client read every answer");
        let refused = statuses.iter().filter(|s| **s != 200).count();
        assert_eq!(
            refused,
            0,
            "{refused} of {} answers were not 200",
            statuses.len()
        );
    }
}

/// `count` JSON-RPC pings one after another on one keep-alive connection; their statuses.
fn statuses_of_pings_in_a_row(port: u16, count: usize) -> Vec<u16> {
    use std::io::{BufRead, BufReader, Read};
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
    let ping = format!(
        "POST /rpc HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    (0..count)
        .map(|_| {
            writer.write_all(ping.as_bytes()).unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
            let mut length = 0;
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    }
                }
            }
            reader.read_exact(&mut vec![0; length]).unwrap();
            status
        })
        .collect()
}

#[test]
fn junk_http_and_headers_do_not_hurt() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    for junk in [
        &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"NONSENSE\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
        b"POST /api/v1/transcriptions HTTP/1.1\r\nContent-Length: nope\r\n\r\n",
    ] {
        let _ = raw_exchange(manager.port, junk, Duration::from_secs(2));
    }
    let traversal = manager.get("/../../etc/passwd");
    assert_eq!(traversal.status, 404);
    assert_still_serving(&manager);
}

#[test]
fn trickling_clients_do_not_delay_a_normal_one() {
    let manager = Setup::new()
        .set("server", "requestTimeoutMs", json!(60_000))
        .start();
    manager.wait_healthy(2);
    // 40 connections that send their head a byte at a time, and 10 that trickle a body.
    let mut slow: Vec<TcpStream> = (0..40)
        .map(|_| connect_with(manager.port, b"POST /api/v1/trans"))
        .collect();
    for _ in 0..10 {
        slow.push(connect_with(
            manager.port,
            b"POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{\"con",
        ));
    }
    let normal = std::thread::scope(|scope| {
        let trickle = scope.spawn(|| {
            for _ in 0..20 {
                for s in &mut slow {
                    let _ = s.write_all(b"x");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let started = Instant::now();
        for i in 0..5 {
            let audio = wav(300, i);
            let reply = manager.transcribe(&audio);
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
        let elapsed = started.elapsed();
        trickle.join().unwrap();
        elapsed
    });
    assert!(
        normal < Duration::from_secs(5),
        "5 normal requests took {normal:?} among 50 trickling clients"
    );
}

/// Writes `request` on `stream` and reads one response (its head and `Content-Length` body).
fn exchange(stream: &mut std::net::TcpStream, request: &[u8]) -> String {
    std::io::Write::write_all(stream, request).unwrap();
    let mut answer = Vec::new();
    let mut byte = [0u8; 1];
    while !answer.ends_with(b"\r\n\r\n") {
        match std::io::Read::read(stream, &mut byte) {
            Ok(1) => answer.push(byte[0]),
            _ => return String::from_utf8_lossy(&answer).into_owned(),
        }
    }
    let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0u8; length];
    std::io::Read::read_exact(stream, &mut body).unwrap();
    answer.extend(body);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn an_answer_slower_than_the_read_timeout_keeps_its_connection() {
    // Each inference takes longer than the connection's read deadline.
    let manager = Setup::new()
        .set("server", "readTimeoutMs", json!(1000))
        .stub(&["--delay-ms", "2500"])
        .start();
    manager.wait_healthy(2);
    let body = transcription(&wav(1600, 1)).to_string();
    let request = format!(
        "POST /api/v1/transcriptions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", manager.port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for n in 1..=2 {
        let answer = exchange(&mut stream, request.as_bytes());
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "answer {n} on one connection: {answer:?}"
        );
    }
    // Idle after its answer, the connection is still closed at the read deadline.
    let started = Instant::now();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_still_serving(&manager);
}
