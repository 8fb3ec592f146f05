//! Route handlers, one file per API family. Handlers parse the request, call into the pool,
//! and shape the JSON; they never touch sockets or processes.
//!
//! - `service`: `GET /`, `GET /health`, `GET /api/v1/providers`, `GET /api/v1/status`.
//! - `transcriptions`: `POST /api/v1/transcriptions` (base64 audio in JSON).
//! - `openai`: `POST /v1/audio/transcriptions` (multipart) and `GET /v1/models`.
//! - `metrics`: `GET /metrics` (Prometheus).
//! - `openapi`: `GET /openapi` (HTML) and `GET /openapi/json` (the OpenAPI 3.1 document).
//!
//! The helpers below are what the transcription routes share.

pub mod metrics;
pub mod openai;
pub mod openapi;
pub mod service;
pub mod transcriptions;

use std::time::Instant;

use crate::app::App;
use crate::error::ApiError;
use crate::pool::client::InferenceForm;
use crate::pool::dispatch::Served;

/// The served model for a request's `model`: absent or empty means the served one; any other
/// id is either unknown (404) or configured but not the one being served (409). Ids are only
/// compared against the settings, never used as paths.
pub fn resolve_model<'a>(app: &'a App, requested: Option<&str>) -> Result<&'a str, ApiError> {
    let served = app.pool.config.model.as_str();
    match requested {
        None | Some("") => Ok(served),
        Some(id) if id == served => Ok(served),
        Some(id) if app.settings.models.contains_key(id) => {
            Err(ApiError::ModelNotLoaded(id.to_string()))
        }
        Some(id) => Err(ApiError::ModelNotFound(id.chars().take(100).collect())),
    }
}

/// Runs `form` on the pool and records how long the worker took.
pub fn infer(
    app: &App,
    model: &str,
    form: &InferenceForm,
    deadline: Instant,
) -> Result<Served, ApiError> {
    let started = Instant::now();
    let served = app.pool.infer(model, form, deadline)?;
    app.metrics.record_inference(model, started.elapsed());
    Ok(served)
}

/// whisper-server joins segments with newlines and starts them with a space; clients want
/// one line of text.
pub fn clean_text(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
