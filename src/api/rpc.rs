//! `POST /rpc`: JSON-RPC 2.0 over HTTP, the same dispatcher rack mode serves on TCP.

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

/// 200 with the JSON-RPC answer, method errors included; 400 with the JSON-RPC error when the
/// body is not a JSON-RPC message at all (unparsable, or not a request); 204 when it held only
/// notifications, which get no answer.
pub fn call(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let body = rq.body()?;
    let message = crate::rpc::parse(&body);
    let malformed = matches!(message, crate::rpc::Message::Single(Err(_)));
    Ok(
        match crate::rpc::answer_message(engine, message, crate::rpc::Transport::Http) {
            Some(answer) if malformed => Reply::json(400, &answer),
            Some(answer) => Reply::ok(&answer),
            None => Reply::no_content(),
        },
    )
}
