//! `POST /rpc`: JSON-RPC 2.0 over HTTP, the same dispatcher rack mode serves on TCP.

use crate::app::App;
use crate::error::ApiError;
use crate::http::request::Incoming;
use crate::http::response::Reply;

/// Always 200 with the JSON-RPC answer (errors included, as JSON-RPC over HTTP does); 204 for
/// notifications, which get no answer.
pub fn call(app: &App, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let body = rq.body()?;
    let text = String::from_utf8_lossy(&body);
    Ok(match crate::rpc::handle(app, &text) {
        Some(answer) => Reply::ok(&answer),
        None => Reply::no_content(),
    })
}
