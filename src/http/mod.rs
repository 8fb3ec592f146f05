//! The HTTP front end: acceptor and request threads (`server`), one request's view and its
//! bounded body (`request`), responses with the common headers (`response`), the route table
//! and API-key check (`router`), and a multipart parser (`multipart`).

pub mod multipart;
pub mod request;
pub mod response;
pub mod router;
pub mod server;

/// Fewest request threads the settings allow: a quarter is kept away from body reading, and
/// that quarter must be at least one thread.
pub const MIN_THREADS: usize = 4;

/// Request threads that may be reading a request body at once: three quarters of them, so
/// stalled uploads can never take the threads that `/health`, `/api/v1/status` and small
/// requests need.
pub fn body_reader_cap(threads: usize) -> usize {
    (threads * 3 / 4).max(1)
}
