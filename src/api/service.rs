//! The service's own routes: `GET /`, `GET /health`, `GET /api/v1/providers`,
//! `GET /api/v1/status` (SPEC section 6, seed 1).

use serde_json::{json, Value};

use crate::app::App;
use crate::error::ApiError;
use crate::http::request::Incoming;
use crate::http::response::Reply;

pub const SERVICE_NAME: &str = "inference-server-manager";

/// Languages whisper's multilingual models know (ISO 639-1 codes); an English-only model
/// (`*.en`) answers in English whatever is asked.
const WHISPER_LANGUAGES: &[&str] = &[
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su", "yue",
];

pub fn index(_app: &App, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&json!({
        "success": true,
        "service": SERVICE_NAME,
        "version": env!("CARGO_PKG_VERSION"),
        "docs": "/openapi",
        "openapi": "/openapi/json",
        "health": "/health",
    })))
}

/// `healthy` (200), `degraded` (200, fewer than half healthy) or `unhealthy` (503, none), so a
/// load balancer can use this as its readiness check.
pub fn health(app: &App, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let (status, body) = health_body(app)?;
    Ok(Reply::json(status, &body))
}

/// The `/health` body and its status code (also the `getHealth` RPC result).
pub fn health_body(app: &App) -> Result<(u16, Value), ApiError> {
    let summary = app.pool.summary();
    let pool_size = app.settings.workers.pool_size;
    let (status, code) = match summary.healthy {
        0 => ("unhealthy", 503),
        n if n * 2 < pool_size => ("degraded", 200),
        _ => ("healthy", 200),
    };
    let body = json!({
        "success": true,
        "status": status,
        "service": SERVICE_NAME,
        "timestamp": crate::clock::now_rfc3339(),
        "uptime": app.pool.started_at.elapsed().as_secs(),
        "pool": { "healthyWorkers": summary.healthy, "totalWorkers": summary.total },
        "capacity": super::capacity::capacity_body(app, None)?,
    });
    Ok((code, body))
}

pub fn providers(app: &App, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let healthy = app.pool.summary().healthy;
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
                "streaming": false,
                "wordTimestamps": true,
                "languages": WHISPER_LANGUAGES,
                "supportedFormats": ["wav", "mp3", "flac", "ogg"],
                "maxDuration": null,
                "maxFileSize": app.settings.server.max_body_bytes,
            },
        }],
    })))
}

pub fn status(app: &App, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    // Counts from the same snapshot as the list, so they always agree with it.
    let workers = app.pool.worker_views();
    let healthy = workers.iter().filter(|w| w.state == "healthy").count();
    let total = workers.iter().filter(|w| w.state != "stopped").count();
    Ok(Reply::ok(&json!({
        "healthyWorkers": healthy,
        "totalWorkers": total,
        "workers": workers,
    })))
}
