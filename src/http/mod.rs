//! The HTTP front end, as a small library in the manner of rouille: it is handed a `Handler`
//! and knows nothing of routes, the pool or the application.
//!
//! - `server`: the tiny_http acceptor (rebound if it dies), the fixed request threads, the
//!   `Handler` trait they call, and the handling of bodies nobody reads.
//! - `request`: `Incoming`, one request as a handler sees it, and its bounded body read.
//! - `response`: `Reply`, and the headers every response carries.
//! - `multipart`: a streaming, bounded `multipart/form-data` parser.
//! - `peer`: whether a request's client is still there, for an answer that takes long.

pub mod multipart;
pub mod peer;
pub mod request;
pub mod response;
pub mod server;

pub use peer::Peer;
pub use request::{BodyError, BodyLimits, Incoming};
pub use response::{CommonHeaders, Reply};
pub use server::{Answered, Config, Handled, Handler, HttpServer, Refusal, StartError};

/// Request threads that may hold a work permit at once (a request other than GET, HEAD or
/// OPTIONS, from arrival to answer: body, queue, inference): three quarters of them (at least
/// one), so uploads, queued requests and model loads can never take the threads that
/// `/health`, `/readyz`, `/api/v1/status` and `/metrics` need.
pub fn work_permit_cap(threads: usize) -> usize {
    (threads * 3 / 4).max(1)
}
