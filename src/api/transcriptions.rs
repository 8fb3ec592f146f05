//! `POST /api/v1/transcriptions`: base64 audio in JSON, a transcript out, in the shapes of the
//! original transcription service (SPEC section 6, seed 1).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::engine::inference::{self, Job};
use crate::error::ApiError;
use crate::http::request::Incoming;
use crate::http::response::Reply;

#[derive(Debug, Deserialize)]
struct TranscriptionRequest {
    content: String,
    language: Option<String>,
    timestamps: Option<bool>,
    metadata: Option<BTreeMap<String, String>>,
    model: Option<String>,
}

pub fn create(app: &App, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let deadline = Instant::now() + Duration::from_millis(app.settings.server.request_timeout_ms);
    let body = rq.body()?;
    let request: TranscriptionRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not the expected JSON: {e}")))?;
    drop(body);
    let model = super::resolve_model(app, request.model.as_deref())?;
    let job = Job {
        model,
        content: &request.content,
        language: request.language.clone(),
        timestamps: request.timestamps.unwrap_or(true),
        deadline,
    };
    let outcome = inference::run(app, &job)?;
    let mut metadata = request.metadata.unwrap_or_default();
    metadata.insert("worker_id".into(), outcome.worker_id.clone());
    metadata.insert(
        "worker_url".into(),
        format!("http://127.0.0.1:{}", outcome.worker_port),
    );
    let t = &outcome.transcript;
    let segments: Vec<_> = t
        .segments
        .iter()
        .map(|s| json!({ "start": s.start, "end": s.end, "text": s.text, "confidence": s.confidence, "speaker": null }))
        .collect();
    Ok(Reply::ok(&json!({
        "success": true,
        "message": "Transcription completed successfully",
        "result": {
            "text": t.text,
            "language": t.language,
            "duration": t.duration,
            "confidence": t.confidence,
            "provider": "whisper-server",
            "segments": segments,
            "metadata": metadata,
        },
    })))
}
