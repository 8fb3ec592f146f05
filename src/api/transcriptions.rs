//! `POST /api/v1/transcriptions`: base64 audio in JSON, a transcript out, in the shapes of the
//! original transcription service (README "API").

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;
use serde_json::json;

use crate::engine::inference::{Input, Job};
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

#[derive(Debug, Deserialize)]
struct TranscriptionRequest {
    content: String,
    language: Option<String>,
    timestamps: Option<bool>,
    metadata: Option<BTreeMap<String, String>>,
    model: Option<String>,
}

pub fn create(engine: &Engine, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let deadline = Instant::now() + engine.settings.server.request_timeout();
    let request: TranscriptionRequest = super::json_body(rq)?;
    let model = engine.resolve_model(request.model.as_deref())?;
    let job = Job {
        model,
        input: Input::Base64(&request.content),
        response_format: Job::transcript_format(request.timestamps.unwrap_or(true)),
        language: request.language.clone(),
        prompt: None,
        temperature: None,
        deadline,
        client_deadline: None,
    };
    let outcome = engine.transcribe(job, |answer| answer.transcript())?;
    let mut metadata = request.metadata.unwrap_or_default();
    metadata.insert("worker_id".into(), outcome.worker_id.clone());
    metadata.insert(
        "worker_url".into(),
        format!("http://127.0.0.1:{}", outcome.worker_port),
    );
    let t = &outcome.shaped;
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
