//! `GET /api/capacity` (and the `capacity` block of `/health`, and `checkCapacity`): how much
//! more work the pool can take now.

use serde_json::{json, Value};

use crate::app::App;
use crate::error::ApiError;
use crate::http::request::Incoming;
use crate::http::response::Reply;

/// `available` is true when an inference could start or wait in the queue now: the cap of
/// `maxConcurrentInferences` is not reached or the queue has room, and a worker (of `model`,
/// when one is named) is healthy.
pub fn capacity_body(app: &App, model: Option<&str>) -> Result<Value, ApiError> {
    if let Some(id) = model {
        if !app.pool.config.models.contains_key(id) {
            return Err(ApiError::ModelNotFound(id.chars().take(100).collect()));
        }
    }
    let warm = app.models.warm(&app.pool);
    let summary = app.pool.summary();
    let inference = &app.settings.inference;
    let room = summary.in_flight < inference.max_concurrent_inferences
        || summary.queue_depth < inference.max_queue;
    let ready = match model {
        Some(id) => warm.iter().any(|w| w == id),
        None => summary.healthy > 0,
    };
    Ok(json!({
        "maxConcurrent": inference.max_concurrent_inferences,
        "currentLoad": summary.in_flight,
        "available": room && ready,
        "queueDepth": summary.queue_depth,
        "availableModels": warm,
    }))
}

pub fn get(app: &App, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&capacity_body(app, None)?))
}
