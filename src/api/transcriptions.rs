//! `POST /api/v1/transcriptions`: base64 audio in JSON, a transcript out, in the shapes of the
//! original transcription service (README "API"), or streamed as it is made (`"stream":
//! true`); and `POST /api/v1/languages/detect`, which takes the same body.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;
use serde_json::{json, Value};

use super::stream::{self, Shape};
use crate::engine::inference::{Budget, Input, Job, Options, Outcome};
use crate::engine::operations::seed_segments;
use crate::engine::transcript::Transcript;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

/// The body as it arrives: `content` is borrowed from the body where it needs no unescaping, so
/// a recording's tens of megabytes of base64 are not copied before they are decoded.
#[derive(Debug, Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    content: Cow<'a, str>,
    #[serde(flatten)]
    fields: Fields,
}

/// The body's fields besides the audio: the original service's, plus the decoder options a
/// client may set.
#[derive(Debug, Deserialize)]
struct Fields {
    language: Option<String>,
    timestamps: Option<bool>,
    metadata: Option<BTreeMap<String, String>>,
    model: Option<String>,
    prompt: Option<String>,
    temperature: Option<f64>,
    translate: Option<bool>,
    /// Answer with server-sent events as the transcript is made.
    stream: Option<bool>,
}

/// A transcription request: the audio decoded from its base64, and the other fields.
#[derive(Debug)]
struct TranscriptionRequest {
    audio: Vec<u8>,
    fields: Fields,
}

/// Reads the body, decodes its base64 and lets the body go: at no time are the body, the
/// base64 text and the audio all held at once.
fn read_request(rq: &mut Incoming) -> Result<TranscriptionRequest, ApiError> {
    let body = rq.body()?;
    let raw: Raw = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not the expected JSON: {e}")))?;
    let audio = crate::audio::decode_base64(&raw.content).map_err(ApiError::InvalidRequest)?;
    Ok(TranscriptionRequest {
        audio,
        fields: raw.fields,
    })
}

impl TranscriptionRequest {
    /// The model and options, checked, and the job for the engine, which takes the audio.
    fn job<'a>(&mut self, engine: &'a Engine, deadline: Instant) -> Result<Job<'a>, ApiError> {
        Ok(Job {
            model: engine.resolve_model(self.fields.model.as_deref())?,
            input: Input::Decoded(std::mem::take(&mut self.audio)),
            options: self.options()?,
            budget: Budget::PerChunk {
                wait_until: deadline,
            },
        })
    }

    fn options(&self) -> Result<Options, ApiError> {
        Options::checked(
            self.fields.language.as_deref(),
            self.fields.prompt.clone(),
            self.fields.temperature,
            self.fields.translate.unwrap_or(false),
        )
    }

    /// The answer's body, as the original service shaped it.
    fn result_body(self, outcome: &Outcome<Transcript>) -> Value {
        let mut metadata = self.fields.metadata.unwrap_or_default();
        metadata.insert("worker_id".into(), outcome.worker_id.clone());
        metadata.insert(
            "worker_url".into(),
            format!("http://127.0.0.1:{}", outcome.worker_port),
        );
        let t = &outcome.result;
        let segments: Vec<Value> = if self.fields.timestamps.unwrap_or(true) {
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
        json!({
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
        })
    }
}

/// `server.requestTimeoutMs` covers the upload, the wait for a worker and the inference.
fn deadline(engine: &Engine) -> Instant {
    Instant::now() + engine.settings.server.request_timeout()
}

pub fn create(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let deadline = deadline(engine);
    let mut request = read_request(rq)?;
    if request.fields.stream.unwrap_or(false) {
        return create_streaming(engine, request, deadline);
    }
    let peer = rq.peer();
    let outcome = engine.transcribe_while(request.job(engine, deadline)?, &|| !peer.hung_up())?;
    Ok(Reply::ok(&request.result_body(&outcome)))
}

/// `"stream": true`: a `segment` event per segment as chunks finish, then `result`.
fn create_streaming(
    engine: &Arc<Engine>,
    mut request: TranscriptionRequest,
    deadline: Instant,
) -> Result<Reply, ApiError> {
    let model = engine
        .resolve_model(request.fields.model.as_deref())?
        .to_string();
    let options = request.options()?;
    let engine = Arc::clone(engine);
    stream::start(Shape::Seed, move |progress| {
        let job = Job {
            model: &model,
            input: Input::Decoded(std::mem::take(&mut request.audio)),
            options,
            budget: Budget::PerChunk {
                wait_until: deadline,
            },
        };
        let outcome = engine.transcribe_streaming(job, progress)?;
        Ok(request.result_body(&outcome))
    })
}

/// `POST /api/v1/languages/detect`: the same body as a transcription; the language spoken,
/// from whisper's own detector, and its probability.
pub fn detect_language(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let deadline = deadline(engine);
    let mut request = read_request(rq)?;
    let outcome = engine.detect_language(request.job(engine, deadline)?)?;
    Ok(Reply::ok(&json!({
        "success": true,
        "language": outcome.result.language,
        "probability": outcome.result.probability,
    })))
}
