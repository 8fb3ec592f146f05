//! `POST /api/inference/:modelId` and `GET /api/inference/history` (README "The inference
//! engine").

use std::sync::Arc;

use serde_json::{json, Value};

use crate::engine::operations::InferenceRequest;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

/// History entries returned when `limit` is not given.
const DEFAULT_HISTORY_LIMIT: usize = 50;

pub fn run(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let request = InferenceRequest::from_value(super::json_body::<Value>(rq)?)?;
    Ok(Reply::ok(&engine.run_inference(rq.param(0), request)?))
}

pub fn history(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let limit = match rq.query_param("limit") {
        None => DEFAULT_HISTORY_LIMIT,
        Some(raw) => raw.parse().map_err(|_| ApiError::InvalidField {
            field: "limit",
            why: format!("`{raw:.20}` is not a whole number"),
        })?,
    };
    let (statistics, entries) = engine.history.snapshot(limit);
    Ok(Reply::ok(
        &json!({ "success": true, "statistics": statistics, "history": entries }),
    ))
}
