//! `Incoming`: one request as the handlers see it — method, path, headers — and the
//! bounded body read.
//!
//! Reading a body is where a slow or hostile client can hold a thread, so it happens only here:
//! with the size limit enforced while reading (chunked bodies have no length to check up
//! front), and with a deadline checked between reads, which ends a trickling upload. A client
//! that sends nothing at all is cut off by the socket's read deadline (`readTimeoutMs`, set on
//! the listener: see `server`). The request holds a work permit meanwhile (`WorkPermits`), so
//! uploads never take the threads that `/health` and the other GETs need.

use std::io::{ErrorKind, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tiny_http::Method;

/// Why a body could not be read; the application decides what each means for its client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The body is, or grew, larger than `BodyLimits::max_bytes`.
    TooLarge { limit: u64 },
    /// A read finished after the request's deadline: the client sends too slowly.
    Timeout,
    /// The connection failed while reading.
    Read(String),
    /// The body ended before the length its `Content-Length` announced.
    Truncated { received: usize, announced: usize },
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(f, "the body is larger than {limit} bytes"),
            BodyError::Timeout => f.write_str("the body did not arrive in time"),
            BodyError::Read(why) => write!(f, "the request body could not be read: {why}"),
            BodyError::Truncated {
                received,
                announced,
            } => write!(
                f,
                "the body ended after {received} of the {announced} bytes announced by Content-Length"
            ),
        }
    }
}

impl std::error::Error for BodyError {}

/// Counts the request threads doing work that can last (see `server::needs_work_permit`),
/// against a cap.
#[derive(Debug)]
pub struct WorkPermits {
    in_use: AtomicUsize,
    cap: usize,
}

impl WorkPermits {
    pub fn new(cap: usize) -> WorkPermits {
        WorkPermits {
            in_use: AtomicUsize::new(0),
            cap,
        }
    }

    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<WorkPermit> {
        self.in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.cap).then_some(n + 1)
            })
            .ok()
            .map(|_| WorkPermit {
                permits: Arc::clone(self),
            })
    }
}

/// One work permit, given back on drop. It owns its count, so a streamed answer can keep it
/// until its last byte (`Reply::hold_while_streaming`).
pub(crate) struct WorkPermit {
    permits: Arc<WorkPermits>,
}

impl Drop for WorkPermit {
    fn drop(&mut self) {
        self.permits.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Limits applied to every body.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: u64,
    pub timeout: Duration,
}

pub struct Incoming<'a> {
    pub method: Method,
    /// The path without the query string.
    pub path: String,
    /// The query string, without the `?`.
    pub query: String,
    /// Values of the route's `:name` segments, in order, percent-decoded.
    pub params: Vec<String>,
    request: &'a mut tiny_http::Request,
    limits: BodyLimits,
    received_at: Instant,
    body_read: bool,
    body_broken: bool,
}

impl<'a> Incoming<'a> {
    pub fn new(request: &'a mut tiny_http::Request, limits: BodyLimits) -> Incoming<'a> {
        let (path, query) = match request.url().split_once('?') {
            Some((path, query)) => (path.to_string(), query.to_string()),
            None => (request.url().to_string(), String::new()),
        };
        Incoming {
            method: request.method().clone(),
            path,
            query,
            params: Vec::new(),
            request,
            limits,
            received_at: Instant::now(),
            body_read: false,
            body_broken: false,
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(self.request, name)
    }

    /// The value of `name` in the query string (not percent-decoded: the one query
    /// parameter, `limit`, is a number).
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
    }

    /// Route parameter `index` (the first `:name` segment is 0).
    pub fn param(&self, index: usize) -> &str {
        self.params.get(index).map_or("", String::as_str)
    }

    /// Hands the body to `parse` as a reader that enforces the limits: more than `max_bytes`
    /// is `BodyError::TooLarge` and a read finishing past the deadline is `BodyError::Timeout`,
    /// whatever `parse` makes of the failed read.
    pub fn with_body<T, E: From<BodyError>>(
        &mut self,
        parse: impl FnOnce(&mut dyn Read) -> Result<T, E>,
    ) -> Result<T, E> {
        let declared = self.request.body_length();
        let max_bytes = self.limits.max_bytes;
        if declared.is_some_and(|n| n as u64 > max_bytes) {
            return Err(BodyError::TooLarge { limit: max_bytes }.into());
        }
        let deadline = self.received_at + self.limits.timeout;
        let mut reader = Bounded {
            inner: self.request.as_reader(),
            read: 0,
            max_bytes,
            deadline,
            broken: None,
            failed: false,
            eof: false,
        };
        let mut result = parse(&mut reader);
        if !reader.eof && reader.broken.is_none() {
            // What the parser left is read here, within the same limits: a multipart epilogue
            // (usually a line break), or the rest of a body the parser refused early, so that
            // a body over its size or time limit is reported as that, and dropping the request
            // costs nothing.
            if let Err(e) = std::io::copy(&mut reader, &mut std::io::sink()) {
                if result.is_ok() {
                    result = Err(BodyError::Read(e.to_string()).into());
                }
            }
        }
        self.body_broken = reader.broken.is_some() || reader.failed;
        if let Some(limit) = reader.broken {
            return Err(limit.into());
        }
        self.body_read = reader.eof;
        result
    }

    /// Reads the whole body within the limits.
    pub fn body(&mut self) -> Result<Vec<u8>, BodyError> {
        let expected = self.request.body_length().unwrap_or(0);
        if let Some(body) = self.body_in_memory() {
            return Ok(body);
        }
        let body = self.with_body(|reader| {
            let mut body = Vec::with_capacity(expected);
            reader
                .read_to_end(&mut body)
                .map_err(|e| BodyError::Read(e.to_string()))?;
            Ok::<_, BodyError>(body)
        })?;
        if body.len() < expected {
            return Err(BodyError::Truncated {
                received: body.len(),
                announced: expected,
            });
        }
        Ok(body)
    }

    /// The whole body when it arrived with the head (tiny_http read it already) and is within
    /// the size limit: handed over as it is, where reading it through `with_body` copied it.
    /// Its deadline is not checked: nothing is waited for to read it.
    fn body_in_memory(&mut self) -> Option<Vec<u8>> {
        if self.request.body_length()? as u64 > self.limits.max_bytes {
            return None;
        }
        let body = self.request.take_body_in_memory()?;
        self.body_read = true;
        Some(body)
    }

    /// The connection this request came on, to tell whether its client is still there.
    pub fn peer(&self) -> super::Peer {
        super::Peer::of(self.request)
    }

    /// Whether the body was read to its end, so dropping the request costs nothing.
    pub fn body_was_read(&self) -> bool {
        self.body_read
    }

    /// Whether reading the body broke off (past its size or time limit, or the connection
    /// failed): where this request ends on the connection, and the next begins, is not known.
    pub fn body_broke_off(&self) -> bool {
        self.body_broken
    }
}

pub fn header_value<'r>(request: &'r tiny_http::Request, name: &str) -> Option<&'r str> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// A body reader that fails once the body passes `max_bytes` or a read ends past `deadline`,
/// and remembers which, so the caller reports the limit rather than a parse error.
struct Bounded<'r> {
    inner: &'r mut dyn Read,
    read: u64,
    max_bytes: u64,
    deadline: Instant,
    broken: Option<BodyError>,
    /// A read failed (the connection, or the body's framing such as a bad chunk).
    failed: bool,
    eof: bool,
}

impl Read for Bounded<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(broken) = &self.broken {
            return Err(std::io::Error::other(broken.to_string()));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            // The socket's read deadline (`SO_RCVTIMEO`): the client went silent.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.broken = Some(BodyError::Timeout);
                return Err(e);
            }
            // An interrupted read is retried by whoever reads (`read_to_end`, `io::copy`).
            Err(e) if e.kind() == ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.failed = true;
                return Err(e);
            }
        };
        self.read += n as u64;
        self.eof = n == 0;
        if self.read > self.max_bytes {
            self.broken = Some(BodyError::TooLarge {
                limit: self.max_bytes,
            });
        } else if Instant::now() > self.deadline {
            self.broken = Some(BodyError::Timeout);
        }
        match &self.broken {
            Some(broken) => Err(std::io::Error::other(broken.to_string())),
            None => Ok(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Yields `chunks` one read at a time, sleeping `pause` before each.
    struct Trickle {
        chunks: Vec<Vec<u8>>,
        pause: Duration,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            std::thread::sleep(self.pause);
            if self.chunks.is_empty() {
                return Ok(0);
            }
            let chunk = self.chunks.remove(0);
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Reads `reader` through `Bounded` like `Incoming::with_body` does.
    fn read_all(
        reader: &mut dyn Read,
        max_bytes: u64,
        deadline: Instant,
    ) -> Result<Vec<u8>, BodyError> {
        let mut bounded = Bounded {
            inner: reader,
            read: 0,
            max_bytes,
            deadline,
            broken: None,
            failed: false,
            eof: false,
        };
        let mut body = Vec::new();
        let result = bounded.read_to_end(&mut body);
        match (bounded.broken, result) {
            (Some(limit), _) => Err(limit),
            (None, Err(e)) => Err(BodyError::Read(e.to_string())),
            (None, Ok(_)) => Ok(body),
        }
    }

    #[test]
    fn reads_within_limits() {
        let mut r = Trickle {
            chunks: vec![b"ab".to_vec(), b"cd".to_vec()],
            pause: Duration::ZERO,
        };
        assert_eq!(read_all(&mut r, 10, far()).unwrap(), b"abcd");
    }

    #[test]
    fn refuses_more_than_the_limit_while_reading() {
        let mut r = Trickle {
            chunks: vec![vec![1; 8], vec![1; 8]],
            pause: Duration::ZERO,
        };
        assert_eq!(
            read_all(&mut r, 10, far()),
            Err(BodyError::TooLarge { limit: 10 })
        );
    }

    #[test]
    fn a_trickling_body_times_out() {
        let mut r = Trickle {
            chunks: vec![vec![1]; 100],
            pause: Duration::from_millis(5),
        };
        let deadline = Instant::now() + Duration::from_millis(20);
        assert_eq!(read_all(&mut r, 1000, deadline), Err(BodyError::Timeout));
    }

    #[test]
    fn permits_are_capped_and_returned() {
        let permits = Arc::new(WorkPermits::new(1));
        let first = permits.try_acquire();
        assert!(first.is_some());
        assert!(permits.try_acquire().is_none());
        drop(first);
        assert!(permits.try_acquire().is_some());
    }

    fn incoming_body(body: &'static str, max_bytes: u64) -> (Result<Vec<u8>, BodyError>, bool) {
        let mut request: tiny_http::Request = tiny_http::TestRequest::new()
            .with_method(Method::Post)
            .with_body(body)
            .into();
        let limits = BodyLimits {
            max_bytes,
            timeout: Duration::from_secs(5),
        };
        let mut incoming = Incoming::new(&mut request, limits);
        let read = incoming.body();
        (read, incoming.body_was_read())
    }

    #[test]
    fn a_body_that_came_with_its_head_is_whole_and_still_within_its_limit() {
        let (read, was_read) = incoming_body("{\"content\": \"UklGRg==\"}", 1024);
        assert_eq!(read.unwrap(), b"{\"content\": \"UklGRg==\"}");
        assert!(was_read);
        let (read, _) = incoming_body("0123456789", 9);
        assert!(
            matches!(read, Err(BodyError::TooLarge { limit: 9 })),
            "{read:?}"
        );
    }

    /// tiny_http's side of it (patched): a body that arrived whole is handed over once, or
    /// read through `as_reader`.
    #[test]
    fn a_whole_body_is_taken_once_or_read() {
        let mut request: tiny_http::Request =
            tiny_http::TestRequest::new().with_body("hello").into();
        assert!(request.body_in_memory());
        assert_eq!(
            request.take_body_in_memory().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(request.take_body_in_memory(), None);
        let mut rest = Vec::new();
        request.as_reader().read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "taken, the body reads as empty");

        let mut request: tiny_http::Request =
            tiny_http::TestRequest::new().with_body("hello").into();
        let mut read = String::new();
        request.as_reader().read_to_string(&mut read).unwrap();
        assert_eq!(read, "hello");
        assert_eq!(request.take_body_in_memory(), None, "read, it is gone");
    }
}
