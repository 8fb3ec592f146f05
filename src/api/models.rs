//! `GET /api/models`, `POST /api/models/:id/load`, `POST /api/models/:id/unload` (README
//! "Models"), over the pool's model manager.

use std::sync::Arc;

use serde_json::json;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

pub fn list(engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let models: Vec<_> = engine
        .pool
        .model_views()
        .into_iter()
        .map(|m| {
            json!({
                "id": m.id,
                "path": m.path,
                "state": m.state.as_str(),
                "workers": m.workers,
                "lastUsed": m.last_used.map(crate::clock::rfc3339),
            })
        })
        .collect();
    Ok(Reply::ok(&json!({ "success": true, "models": models })))
}

/// Returns once the model's workers are healthy.
pub fn load(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&engine.load_model(rq.param(0))?))
}

pub fn unload(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&engine.unload_model(rq.param(0))?))
}
