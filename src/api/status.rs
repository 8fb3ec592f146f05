//! The service's own routes: `GET /` (the JSON index, or for a browser the page), `GET /health`, `GET /livez`, `GET /readyz`,
//! `GET /api/v1/providers`, `GET /api/v1/status` (README "API").

use std::sync::Arc;

use serde_json::json;

use super::page;
use crate::audio;
use crate::engine::languages;
use crate::engine::operations::SERVICE_NAME;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

/// The page for a browser (`Accept: text/html`), the JSON index for everyone else.
pub fn index(_engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    if page::wants_page(rq.header("Accept")) {
        return Ok(page::reply());
    }
    Ok(Reply::ok(&json!({
        "success": true,
        "service": SERVICE_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "docs": "/openapi",
        "openapi": "/openapi/json",
        "health": "/health",
    }))
    .with_header("Vary", "Accept".into()))
}

/// 200 while a worker of the default model is healthy, 503 when none is, so a load balancer
/// can use this as its readiness check.
pub fn health(engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let health = engine.health()?;
    Ok(Reply::json(
        if health.serving { 200 } else { 503 },
        &health.body,
    ))
}

/// Liveness: the process serves HTTP. Nothing about the workers, so an orchestrator restarts
/// the manager only when the manager itself is stuck.
pub fn livez(_engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&json!({ "status": "alive" })))
}

/// Readiness: 200 when a worker of the default model can take a request now, else 503.
pub fn readyz(engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let readiness = engine.readiness();
    Ok(Reply::json(
        if readiness.serving { 200 } else { 503 },
        &readiness.body,
    ))
}

pub fn providers(engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let healthy = engine.pool.snapshot().healthy;
    Ok(Reply::ok(&json!({
        "success": true,
        "providers": [{
            "id": "whisper-server",
            "name": "Whisper Server",
            "description": "Local whisper.cpp whisper-server workers supervised by inference-server-manager",
            "available": healthy > 0,
            "costPerMinute": 0,
            "speed": null,
            "capabilities": {
                "batch": false,
                "diarization": false,
                "streaming": true,
                "wordTimestamps": true,
                "languages": languages::codes(),
                "supportedFormats": if engine.ffmpeg.is_some() {
                    audio::WITH_FFMPEG.to_vec()
                } else {
                    audio::without_ffmpeg()
                },
                "maxDuration": null,
                "maxFileSize": engine.settings.server.max_body_bytes,
            },
        }],
    })))
}

pub fn status(engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let snapshot = engine.pool.snapshot();
    Ok(Reply::ok(&json!({
        "healthyWorkers": snapshot.healthy,
        "totalWorkers": snapshot.total,
        "workers": snapshot.workers,
        "transcriptions": engine.progress.snapshot(),
    })))
}
