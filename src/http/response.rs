//! `Reply`: what a handler returns, and its conversion into a `tiny_http` response with the
//! headers every response carries (CORS, `X-Request-Id`).

use std::io::{Cursor, Read};

use tiny_http::{Header, Response, StatusCode};

/// A complete response, built before any byte is written, so a panicking handler can still
/// be answered with a clean 500. A streamed one (`Reply::stream`) has its head decided too;
/// only its body comes later.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    pub headers: Vec<(&'static str, String)>,
    /// A body produced over time (server-sent events), sent as it is read, in chunks; `body`
    /// is then empty.
    pub stream: Option<Stream>,
}

/// A body read as it is produced; EOF ends the response.
pub struct Stream(pub Box<dyn Read + Send>);

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stream")
    }
}

impl Reply {
    pub fn json(status: u16, value: &serde_json::Value) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            body: serde_json::to_vec(value).expect("a Value always serializes"),
            headers: Vec::new(),
            stream: None,
        }
    }

    pub fn ok(value: &serde_json::Value) -> Reply {
        Reply::json(200, value)
    }

    pub fn html(body: String) -> Reply {
        Reply {
            status: 200,
            content_type: "text/html; charset=utf-8",
            body: body.into_bytes(),
            headers: Vec::new(),
            stream: None,
        }
    }

    pub fn no_content() -> Reply {
        Reply {
            status: 204,
            content_type: "text/plain",
            body: Vec::new(),
            headers: Vec::new(),
            stream: None,
        }
    }

    pub fn text(content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body,
            headers: Vec::new(),
            stream: None,
        }
    }

    /// A 200 whose body is `body`, sent as it is read (chunked transfer).
    pub fn stream(content_type: &'static str, body: Box<dyn Read + Send>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: Vec::new(),
            headers: Vec::new(),
            stream: Some(Stream(body)),
        }
    }

    /// Keeps `guard` until a streamed body has been read to its end (or is dropped unread); a
    /// body in memory drops it at once.
    pub fn hold_while_streaming<G: Send + 'static>(mut self, guard: G) -> Reply {
        if let Some(Stream(reader)) = self.stream.take() {
            let holding = Holding {
                reader,
                guard: Some(guard),
            };
            self.stream = Some(Stream(Box::new(holding)));
        }
        self
    }

    /// Adds a header of the handler's own (`Retry-After`, `Allow`, ...).
    pub fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// A stream that drops its guard at its end, before tiny_http writes the last chunk.
struct Holding<G> {
    reader: Box<dyn Read + Send>,
    guard: Option<G>,
}

impl<G> Read for Holding<G> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.reader.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.guard = None;
        }
        Ok(n)
    }
}

/// A response body: bytes in memory, or a stream.
pub type Body = Box<dyn Read + Send>;

/// Headers added to every response, whatever the route.
#[derive(Debug, Clone)]
pub struct CommonHeaders {
    pub cors_origin: String,
}

pub const CORS_METHODS: &str = "GET, POST, PUT, DELETE, OPTIONS";
pub const CORS_HEADERS: &str = "Content-Type, Authorization";

/// Builds the `tiny_http` response. Header values come from our code or from a sanitised
/// request id, so a value that `tiny_http` refuses is a bug and is dropped with a log line.
pub fn to_tiny(reply: Reply, common: &CommonHeaders, request_id: &str) -> Response<Body> {
    let mut response = match reply.stream {
        Some(Stream(reader)) => {
            Response::new(StatusCode(reply.status), Vec::new(), reader, None, None)
        }
        None => {
            let length = reply.body.len();
            let body: Body = Box::new(Cursor::new(reply.body));
            // Sent with its Content-Length whatever its size: chunks are for streams.
            Response::new(
                StatusCode(reply.status),
                Vec::new(),
                body,
                Some(length),
                None,
            )
            .with_chunked_threshold(usize::MAX)
        }
    };
    let mut headers: Vec<(&str, &str)> = vec![
        ("Content-Type", reply.content_type),
        ("Access-Control-Allow-Origin", &common.cors_origin),
        ("Access-Control-Allow-Methods", CORS_METHODS),
        ("Access-Control-Allow-Headers", CORS_HEADERS),
        ("X-Request-Id", request_id),
    ];
    headers.extend(reply.headers.iter().map(|(k, v)| (*k, v.as_str())));
    for (name, value) in headers {
        match Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            Ok(header) => response.add_header(header),
            Err(()) => log::error!("dropping invalid response header {name}: {value:?}"),
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Sets its flag when dropped.
    struct Dropped(Arc<AtomicBool>);

    impl Drop for Dropped {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn guarded(reply: Reply) -> (Reply, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        let reply = reply.hold_while_streaming(Dropped(Arc::clone(&dropped)));
        (reply, dropped)
    }

    #[test]
    fn a_stream_holds_its_guard_until_its_end() {
        let source: Box<dyn Read + Send> = Box::new(Cursor::new(b"data: 1\n\n".to_vec()));
        let (reply, dropped) = guarded(Reply::stream("text/event-stream", source));
        let Some(Stream(mut body)) = reply.stream else {
            panic!("still a stream")
        };
        let mut buf = [0u8; 4];
        assert_eq!(body.read(&mut buf).unwrap(), 4);
        assert_eq!(
            body.read(&mut [0u8; 0]).unwrap(),
            0,
            "an empty read is no end"
        );
        assert!(!dropped.load(Ordering::SeqCst), "held while bytes remain");
        let mut rest = Vec::new();
        body.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b": 1\n\n");
        assert!(dropped.load(Ordering::SeqCst), "given back at the end");
    }

    #[test]
    fn a_stream_dropped_unread_gives_its_guard_back() {
        let source: Box<dyn Read + Send> = Box::new(Cursor::new(b"data: 1\n\n".to_vec()));
        let (reply, dropped) = guarded(Reply::stream("text/event-stream", source));
        drop(reply);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_body_in_memory_gives_its_guard_back_at_once() {
        let (reply, dropped) = guarded(Reply::text("text/plain", b"ok".to_vec()));
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(reply.body, b"ok");
    }
}
