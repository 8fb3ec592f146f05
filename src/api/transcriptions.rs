//! `POST /api/v1/transcriptions`: base64 audio in JSON, a transcript out, in the shapes of the
//! original transcription service (README "API"); and `POST /api/v1/languages/detect`, which
//! takes the same body.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::inference::{Budget, Input, Job, Options};
use crate::engine::operations::seed_segments;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

/// The body, as the original service took it, plus the decoder options a client may set.
#[derive(Debug, Deserialize)]
struct TranscriptionRequest {
    content: String,
    language: Option<String>,
    timestamps: Option<bool>,
    metadata: Option<BTreeMap<String, String>>,
    model: Option<String>,
    prompt: Option<String>,
    temperature: Option<f64>,
    translate: Option<bool>,
}

impl TranscriptionRequest {
    /// The model and options, checked, and the job for the engine.
    fn job<'a>(&'a self, engine: &'a Engine, deadline: Instant) -> Result<Job<'a>, ApiError> {
        Ok(Job {
            model: engine.resolve_model(self.model.as_deref())?,
            input: Input::Base64(&self.content),
            options: Options::checked(
                self.language.as_deref(),
                self.prompt.clone(),
                self.temperature,
                self.translate.unwrap_or(false),
            )?,
            budget: Budget::PerChunk {
                wait_until: deadline,
            },
        })
    }
}

/// `server.requestTimeoutMs` covers the upload, the wait for a worker and the inference.
fn deadline(engine: &Engine) -> Instant {
    Instant::now() + engine.settings.server.request_timeout()
}

pub fn create(engine: &Engine, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let deadline = deadline(engine);
    let request: TranscriptionRequest = super::json_body(rq)?;
    let outcome = engine.transcribe(request.job(engine, deadline)?)?;
    let mut metadata = request.metadata.unwrap_or_default();
    metadata.insert("worker_id".into(), outcome.worker_id.clone());
    metadata.insert(
        "worker_url".into(),
        format!("http://127.0.0.1:{}", outcome.worker_port),
    );
    let t = &outcome.result;
    let segments: Vec<Value> = if request.timestamps.unwrap_or(true) {
        seed_segments(t)
            .into_iter()
            .map(|mut s| {
                s["speaker"] = Value::Null;
                s
            })
            .collect()
    } else {
        Vec::new()
    };
    Ok(Reply::ok(&json!({
        "success": true,
        "message": "Transcription completed successfully",
        "result": {
            "text": t.text,
            "language": t.language,
            "duration": t.duration,
            "confidence": t.confidence(),
            "provider": "whisper-server",
            "segments": segments,
            "metadata": metadata,
        },
    })))
}

/// `POST /api/v1/languages/detect`: the same body as a transcription; the language spoken,
/// from whisper's own detector, and its probability.
pub fn detect_language(engine: &Engine, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let deadline = deadline(engine);
    let request: TranscriptionRequest = super::json_body(rq)?;
    let outcome = engine.detect_language(request.job(engine, deadline)?)?;
    Ok(Reply::ok(&json!({
        "success": true,
        "language": outcome.result.language,
        "probability": outcome.result.probability,
    })))
}
