//! `GET /api/models`, `POST /api/models/:id/load`, `POST /api/models/:id/unload` (SPEC
//! section 6, seed 2), over the model manager.

use serde_json::{json, Value};

use crate::app::App;
use crate::engine::models::{Loaded, Unloaded};
use crate::error::ApiError;
use crate::http::request::Incoming;
use crate::http::response::Reply;

pub fn list(app: &App, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(
        &json!({ "success": true, "models": app.models.list(&app.pool) }),
    ))
}

pub fn load(app: &App, rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&load_body(app, rq.param(0))?))
}

pub fn unload(app: &App, rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&unload_body(app, rq.param(0))?))
}

/// Returns once the model's workers are healthy.
pub fn load_body(app: &App, id: &str) -> Result<Value, ApiError> {
    let message = match app.models.load(&app.pool, id)? {
        Loaded::Now => "Model loaded successfully",
        Loaded::Already => "Model already loaded",
    };
    Ok(json!({ "success": true, "message": message }))
}

pub fn unload_body(app: &App, id: &str) -> Result<Value, ApiError> {
    let message = match app.models.unload(&app.pool, id)? {
        Unloaded::Now => "Model unloaded successfully",
        Unloaded::NotLoaded => "Model not loaded",
    };
    Ok(json!({ "success": true, "message": message }))
}

/// The warm models, for `getAvailableModels`.
pub fn available_body(app: &App) -> Value {
    json!({ "success": true, "models": app.models.warm(&app.pool) })
}
