use ascii::AsciiString;

use std::io::Error as IoError;
use std::io::Result as IoResult;
use std::io::{BufReader, BufWriter, ErrorKind, Read};

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::common::{HTTPVersion, Method};
use crate::util::RefinedTcpStream;
use crate::util::{SequentialReader, SequentialReaderBuilder, SequentialWriterBuilder};
use crate::Request;

/// A ClientConnection is an object that will store a socket to a client
/// and return Request objects.
pub struct ClientConnection {
    // address of the client
    remote_addr: IoResult<Option<SocketAddr>>,

    // sequence of Readers to the stream, so that the data is not read in
    //  the wrong order
    source: SequentialReaderBuilder<BufReader<RefinedTcpStream>>,

    // sequence of Writers to the stream, to avoid writing response #2 before
    //  response #1
    sink: SequentialWriterBuilder<BufWriter<RefinedTcpStream>>,

    // Reader to read the next header from
    next_header_source: SequentialReader<BufReader<RefinedTcpStream>>,

    // set to true if we know that the previous request is the last one
    no_more_requests: bool,

    // true if the connection goes through SSL
    secure: bool,

    // PATCHED: the write half's descriptor, which every request's response writer keeps
    // open (`Request::peer_probe`)
    peer: Option<crate::request::PeerProbe>,

    // PATCHED: set by `Request::respond_and_close`: no request is read after that one
    closing: Arc<AtomicBool>,
}

/// PATCHED (inference-server-manager): upstream reads head lines with no limit, so one
/// endless header line grows memory without bound. A line longer than this is refused with
/// 414 (request line) or 431 (header), and the connection closed.
const MAX_LINE_BYTES: usize = 8 * 1024;

/// PATCHED: the whole head (request line and headers) is refused with 431 past this size.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// PATCHED: after an answer sent with `Request::respond_and_close`, what the client still
/// sends is read and dropped, up to this much or for this long (each read bounded by the
/// socket's read timeout), before the connection is closed: closing a socket with unread data
/// resets it, and a client still writing its body could lose the answer.
const LINGER_BYTES: u64 = 1024 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Error that can happen when reading a request.
#[derive(Debug)]
enum ReadError {
    /// PATCHED: the request line is longer than `MAX_LINE_BYTES`.
    RequestLineTooLong,
    /// PATCHED: a header line or the head is longer than its limit.
    HeadTooLarge(HTTPVersion),
    WrongRequestLine,
    WrongHeader(HTTPVersion),
    /// the client sent an unrecognized `Expect` header
    ExpectationFailed(HTTPVersion),
    ReadIoError(IoError),
}

impl ClientConnection {
    /// Creates a new `ClientConnection` that takes ownership of the `TcpStream`.
    pub fn new(
        write_socket: RefinedTcpStream,
        mut read_socket: RefinedTcpStream,
    ) -> ClientConnection {
        let remote_addr = read_socket.peer_addr();
        let secure = read_socket.secure();
        let peer = write_socket.tcp_fd().map(crate::request::PeerProbe);

        let mut source = SequentialReaderBuilder::new(BufReader::with_capacity(1024, read_socket));
        let first_header = source.next().unwrap();

        ClientConnection {
            source,
            sink: SequentialWriterBuilder::new(BufWriter::with_capacity(1024, write_socket)),
            remote_addr,
            next_header_source: first_header,
            no_more_requests: false,
            secure,
            peer,
            closing: Arc::new(AtomicBool::new(false)),
        }
    }

    /// true if the connection is HTTPS
    pub fn secure(&self) -> bool {
        self.secure
    }

    /// Reads the next line from self.next_header_source.
    ///
    /// Reads until `CRLF` is reached. The next read will start
    ///  at the first byte of the new line.
    ///
    /// PATCHED: with `request_line`, silence before the line's first byte outlasting the
    /// socket's read timeout is waited through while an answer on this connection is still
    /// being made: the client is waiting for it, not idle. Upstream the timeout ran from when
    /// the previous request was read, so an answer that took longer than it (a transcription
    /// takes minutes) closed the connection right after it was sent, and a client reusing the
    /// connection saw it close without an answer.
    fn read_next_line(&mut self, request_line: bool) -> IoResult<AsciiString> {
        let mut buf = Vec::new();
        let mut prev_byte_was_cr = false;

        loop {
            let byte = self.next_header_source.by_ref().bytes().next();
            if let Some(Err(e)) = &byte {
                let timed_out = matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
                if timed_out && request_line && buf.is_empty() && self.sink.answering() {
                    continue;
                }
            }

            let byte = match byte {
                Some(b) => b?,
                None => return Err(IoError::new(ErrorKind::ConnectionAborted, "Unexpected EOF")),
            };

            if byte == b'\n' && prev_byte_was_cr {
                buf.pop(); // removing the '\r'
                return AsciiString::from_ascii(buf)
                    .map_err(|_| IoError::new(ErrorKind::InvalidInput, "Header is not in ASCII"));
            }
            // PATCHED: a bare LF or CR in the head is answered 400 (RFC 9112 section 2.2).
            // Upstream read on past a bare LF for a CRLF that never came, and the client got
            // no answer until the read timeout; taking the LF as a line end instead could read
            // a head otherwise than a proxy in front. A bare CR was kept in the line.
            if byte == b'\n' || prev_byte_was_cr {
                return Err(IoError::new(ErrorKind::InvalidInput, "bare LF or CR in the head"));
            }

            prev_byte_was_cr = byte == b'\r';

            if buf.len() >= MAX_LINE_BYTES {
                return Err(IoError::new(ErrorKind::InvalidData, "head line too long"));
            }
            buf.push(byte);
        }
    }

    /// PATCHED: reads and drops what the client still sends after the connection's last
    /// answer (`LINGER_BYTES`, `LINGER_TIME`), before the connection ends.
    fn linger(&mut self) {
        let until = std::time::Instant::now() + LINGER_TIME;
        let mut left = LINGER_BYTES;
        let mut buf = [0u8; 8192];
        while left > 0 && std::time::Instant::now() < until {
            match self.next_header_source.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n as u64),
            }
        }
    }

    /// Reads a request from the stream.
    /// Blocks until the header has been read.
    fn read(&mut self) -> Result<Request, ReadError> {
        let (method, path, version, headers) = {
            // reading the request line
            let (method, path, version) = {
                let line = self.read_next_line(true);
                // PATCHED: what follows a request answered with `respond_and_close` (the rest
                // of a body that was cut short, or a request hidden in it) is not served, nor
                // answered.
                if self.closing.load(Ordering::Acquire) {
                    self.linger();
                    return Err(ReadError::ReadIoError(IoError::new(
                        ErrorKind::ConnectionAborted,
                        "the connection was closed after its last answer",
                    )));
                }
                let line = line.map_err(|e| match e.kind() {
                    ErrorKind::InvalidData => ReadError::RequestLineTooLong,
                    // PATCHED: a byte past ASCII is answered 400; upstream closed silently.
                    ErrorKind::InvalidInput => ReadError::WrongRequestLine,
                    _ => ReadError::ReadIoError(e),
                })?;

                parse_request_line(
                    line.as_str().trim(), // TODO: remove this conversion
                )?
            };

            // getting all headers
            let headers = {
                let mut headers = Vec::new();
                let mut head_bytes = 0;
                loop {
                    let line = self.read_next_line(false).map_err(|e| match e.kind() {
                        ErrorKind::InvalidData => ReadError::HeadTooLarge(version.clone()),
                        // PATCHED: a byte past ASCII is answered 400; upstream closed silently.
                        ErrorKind::InvalidInput => ReadError::WrongHeader(version.clone()),
                        _ => ReadError::ReadIoError(e),
                    })?;

                    if line.is_empty() {
                        break;
                    };
                    head_bytes += line.len() + 2;
                    if head_bytes > MAX_HEAD_BYTES {
                        return Err(ReadError::HeadTooLarge(version));
                    }
                    headers.push(match FromStr::from_str(line.as_str().trim()) {
                        // TODO: remove this conversion
                        Ok(h) => h,
                        _ => return Err(ReadError::WrongHeader(version)),
                    });
                }

                headers
            };

            (method, path, version, headers)
        };

        // building the writer for the request
        let writer = self.sink.next().unwrap();

        // follow-up for next potential request
        let mut data_source = self.source.next().unwrap();
        std::mem::swap(&mut self.next_header_source, &mut data_source);

        // building the next reader
        let request = crate::request::new_request(
            self.secure,
            method,
            path,
            version.clone(),
            headers,
            *self.remote_addr.as_ref().unwrap(),
            data_source,
            writer,
        )
        .map_err(|e| {
            use crate::request;
            match e {
                request::RequestCreationError::CreationIoError(e) => ReadError::ReadIoError(e),
                request::RequestCreationError::ExpectationFailed => {
                    ReadError::ExpectationFailed(version)
                }
                // PATCHED: answered 400, and the connection closed: where this request's body
                // ends, and so where the next request begins, is not known.
                request::RequestCreationError::AmbiguousLength => ReadError::WrongHeader(version),
            }
        })?;

        // return the request
        Ok(request.with_connection(self.peer, Arc::clone(&self.closing)))
    }
}

impl Iterator for ClientConnection {
    type Item = Request;

    /// Blocks until the next Request is available.
    /// Returns None when no new Requests will come from the client.
    fn next(&mut self) -> Option<Request> {
        use crate::{Response, StatusCode};

        // the client sent a "connection: close" header in this previous request
        //  or is using HTTP 1.0, meaning that no new request will come
        if self.no_more_requests {
            return None;
        }
        if self.closing.load(Ordering::Acquire) {
            self.linger();
            return None;
        }

        loop {
            let rq = match self.read() {
                Err(ReadError::RequestLineTooLong) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(414));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None;
                }

                Err(ReadError::HeadTooLarge(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(431));
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None;
                }

                Err(ReadError::WrongRequestLine) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::WrongHeader(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(400));
                    response.raw_print(writer, ver, &[], false, None).ok();
                    return None; // we don't know where the next request would start,
                                 // se we have to close
                }

                Err(ReadError::ReadIoError(ref err)) if err.kind() == ErrorKind::TimedOut => {
                    // request timeout
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(408));
                    response
                        .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                        .ok();
                    return None; // closing the connection
                }

                Err(ReadError::ExpectationFailed(ver)) => {
                    let writer = self.sink.next().unwrap();
                    let response = Response::new_empty(StatusCode(417));
                    response.raw_print(writer, ver, &[], true, None).ok();
                    return None; // TODO: should be recoverable, but needs handling in case of body
                }

                Err(ReadError::ReadIoError(_)) => return None,

                Ok(rq) => rq,
            };

            // checking HTTP version
            if *rq.http_version() > (1, 1) {
                let writer = self.sink.next().unwrap();
                let response = Response::from_string(
                    "This server only supports HTTP versions 1.0 and 1.1".to_owned(),
                )
                .with_status_code(StatusCode(505));
                response
                    .raw_print(writer, HTTPVersion(1, 1), &[], false, None)
                    .ok();
                continue;
            }

            // updating the status of the connection
            let connection_header = rq
                .headers()
                .iter()
                .find(|h| h.field.equiv("Connection"))
                .map(|h| h.value.as_str());

            let lowercase = connection_header.map(|h| h.to_ascii_lowercase());

            match lowercase {
                Some(ref val) if val.contains("close") => self.no_more_requests = true,
                Some(ref val) if val.contains("upgrade") => self.no_more_requests = true,
                Some(ref val)
                    if !val.contains("keep-alive") && *rq.http_version() == HTTPVersion(1, 0) =>
                {
                    self.no_more_requests = true
                }
                None if *rq.http_version() == HTTPVersion(1, 0) => self.no_more_requests = true,
                _ => (),
            };

            // returning the request
            return Some(rq);
        }
    }
}

/// Parses a "HTTP/1.1" string.
fn parse_http_version(version: &str) -> Result<HTTPVersion, ReadError> {
    let (major, minor) = match version {
        "HTTP/0.9" => (0, 9),
        "HTTP/1.0" => (1, 0),
        "HTTP/1.1" => (1, 1),
        "HTTP/2.0" => (2, 0),
        "HTTP/3.0" => (3, 0),
        _ => return Err(ReadError::WrongRequestLine),
    };

    Ok(HTTPVersion(major, minor))
}

/// Parses the request line of the request.
/// eg. GET / HTTP/1.1
fn parse_request_line(line: &str) -> Result<(Method, String, HTTPVersion), ReadError> {
    let mut parts = line.split(' ');

    // PATCHED: a method that is not a token (RFC 9110 section 5.6.2) is a malformed request
    // line (400); upstream took any ASCII word, so `G(T` was answered 405.
    let method = parts
        .next()
        .filter(|w| is_token(w))
        .and_then(|w| w.parse().ok());
    let path = parts.next().map(origin_form);
    let version = parts.next().and_then(|w| parse_http_version(w).ok());

    method
        .and_then(|method| Some((method, path?, version?)))
        .ok_or(ReadError::WrongRequestLine)
}

/// Whether `word` is an HTTP token: one or more of the characters RFC 9110 allows in a method.
fn is_token(word: &str) -> bool {
    !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// PATCHED: a target in absolute form (`http://host/path?q`, which RFC 9112 section 3.2.2 says
/// a server must accept) becomes its origin form (`/path?q`); upstream handed it on as the
/// path, so no route matched it.
fn origin_form(target: &str) -> String {
    let scheme = |name: &str| {
        target
            .get(..name.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(name))
    };
    let rest = if scheme("http://") {
        &target[7..]
    } else if scheme("https://") {
        &target[8..]
    } else {
        return target.to_owned();
    };
    match rest.find(['/', '?']) {
        Some(at) if rest.as_bytes()[at] == b'/' => rest[at..].to_owned(),
        Some(at) => format!("/{}", &rest[at..]),
        None => "/".to_owned(),
    }
}

#[cfg(test)]
mod test {
    #[test]
    fn test_parse_request_line() {
        let (method, path, ver) = super::parse_request_line("GET /hello HTTP/1.1").unwrap();

        assert!(method == crate::Method::Get);
        assert!(path == "/hello");
        assert!(ver == crate::common::HTTPVersion(1, 1));

        assert!(super::parse_request_line("GET /hello").is_err());
        assert!(super::parse_request_line("qsd qsd qsd").is_err());
    }
}
