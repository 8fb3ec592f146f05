//! HTTP as a client sees it: one request on a fresh connection, or raw bytes on a socket.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::time::Duration;

use serde_json::Value;

use super::{wait_for, SOON};

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Asserts the service's error body (README "API") and returns its `code`.
    pub fn error_code(&self) -> String {
        let body = self.json();
        assert_eq!(body["success"], false, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        body["code"].as_str().unwrap().to_string()
    }
}

/// A bodiless request that may fail to connect (a server still starting, or gone).
pub fn try_request(method: &str, url: &str) -> Option<Reply> {
    TcpStream::connect(url.trim_start_matches("http://").split('/').next()?).ok()?;
    Some(request(method, url, &[], None))
}

/// Waits until `GET url` answers 200 (a server that is starting, or coming back).
pub fn wait_ok(url: &str) -> bool {
    wait_for(SOON, || {
        (try_request("GET", url)?.status == 200).then_some(())
    })
    .is_some()
}

/// One HTTP/1.1 request on a fresh connection; any status is a `Reply`. A minute at most,
/// so a hung service fails a test instead of stalling it.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: Option<Vec<u8>>) -> Reply {
    request_within(Duration::from_secs(60), method, url, headers, body)
}

/// [`request`] for work that takes longer than a minute (a long recording on real workers).
pub fn request_within(
    limit: Duration,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(limit))
            .allow_non_standard_methods(true)
            .build(),
    );
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = match body {
        Some(body) => agent.run(builder.body(body).unwrap()),
        None => agent.run(builder.body(()).unwrap()),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let status = response.status().as_u16();
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .read_to_end(&mut body)
        .unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

/// A raw connection to `port` on loopback that has sent `head` (which may be any bytes).
pub fn connect_with(port: u16, head: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    stream.write_all(head).unwrap();
    stream
}

/// Writes an endless header line to `port` for `for_how_long`; returns the bytes the peer took
/// and what it answered before closing.
pub fn endless_header(port: u16, for_how_long: Duration) -> (usize, String) {
    let mut stream = connect_with(port, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ");
    stream
        .set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    let started = std::time::Instant::now();
    let mut sent = 0;
    while started.elapsed() < for_how_long {
        match stream.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    (sent, String::from_utf8_lossy(&answer).into_owned())
}

/// Writes `head` (and nothing else) on a raw connection and returns what comes back before
/// the server closes or `limit` passes.
pub fn raw_exchange(port: u16, head: &[u8], limit: Duration) -> String {
    let mut stream = connect_with(port, head);
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && complete(&answer) {
            break;
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Whether a raw response with `Content-Length` has all its body.
fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
    });
    length.is_some_and(|n| body.len() >= n)
}

/// The head and the decoded body of a raw HTTP/1.1 response whose body is sent with chunked
/// transfer encoding (a stream of server-sent events).
pub fn dechunk(raw: &[u8]) -> (String, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut rest = &raw[split + 4..];
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let size_text = String::from_utf8_lossy(&rest[..line_end]);
        let size = usize::from_str_radix(size_text.trim(), 16).expect("a hex chunk size");
        rest = &rest[line_end + 2..];
        if size == 0 {
            return (head, body);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}
