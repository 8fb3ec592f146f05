//! Route handlers, one file per API family. Handlers parse the request, call the engine or the
//! pool, and shape the JSON; they never touch sockets or processes. The `*_body` functions
//! return the JSON bodies that the JSON-RPC methods answer with too.
//!
//! - `service`: `GET /`, `GET /health`, `GET /api/v1/providers`, `GET /api/v1/status`.
//! - `transcriptions`: `POST /api/v1/transcriptions` (base64 audio in JSON).
//! - `models`: `GET /api/models`, `POST /api/models/:id/load`, `POST /api/models/:id/unload`.
//! - `inference`: `POST /api/inference/:modelId`, `GET /api/inference/history`.
//! - `capacity`: `GET /api/capacity`.
//! - `rpc`: `POST /rpc` (JSON-RPC 2.0, the same dispatcher as rack mode).
//! - `openai`: `POST /v1/audio/transcriptions` (multipart) and `GET /v1/models`.
//! - `metrics`: `GET /metrics` (Prometheus).
//! - `openapi`: `GET /openapi` (HTML) and `GET /openapi/json` (the OpenAPI 3.1 document).

pub mod capacity;
pub mod inference;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod openapi;
pub mod rpc;
pub mod service;
pub mod transcriptions;

use crate::app::App;
use crate::error::ApiError;

/// The model a request runs on: absent or empty means the default model; any other id must
/// be configured (404 otherwise) and loaded (409 otherwise, unless `inference.autoLoad`
/// loads it now). Ids are only looked up in the settings, never used as paths.
pub fn resolve_model<'a>(app: &'a App, requested: Option<&str>) -> Result<&'a str, ApiError> {
    let id = match requested {
        None | Some("") => return Ok(app.pool.config.model.as_str()),
        Some(id) => id,
    };
    let (known, _) = app
        .pool
        .config
        .models
        .get_key_value(id)
        .ok_or_else(|| ApiError::ModelNotFound(id.chars().take(100).collect()))?;
    app.models
        .ensure_available(&app.pool, known, app.settings.inference.auto_load)?;
    Ok(known.as_str())
}
