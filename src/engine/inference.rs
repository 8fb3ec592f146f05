//! The inference engine: one run of base64 audio through the pool, in the stages SPEC section 6
//! names, each a small function: validate, preprocess, execute (under a deadline), postprocess,
//! record. `/api/v1/transcriptions`, `/api/inference/:modelId` and the `runInference` RPC all
//! run through here, so they share limits, the capacity cap and the history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::history::Entry;
use super::transcript::Transcript;
use crate::app::App;
use crate::audio::{self, Container};
use crate::error::ApiError;
use crate::pool::client::InferenceForm;
use crate::pool::dispatch::Served;

/// Fewer bytes than a WAV header cannot be audio worth sending to a worker.
const MIN_AUDIO_BYTES: usize = 44;

/// A request to the engine.
#[derive(Debug, Clone)]
pub struct Job<'a> {
    /// A model id already checked against the settings.
    pub model: &'a str,
    /// Base64 audio, as the client sent it.
    pub content: &'a str,
    pub language: Option<String>,
    /// Ask the worker for `verbose_json` (segments, duration, confidence).
    pub timestamps: bool,
    /// The whole run, queue wait included, ends here; a worker still busy then is recycled.
    pub deadline: Instant,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub inference_id: String,
    pub transcript: Transcript,
    pub worker_id: String,
    pub worker_port: u16,
    /// Milliseconds from the start of validation to the end of postprocessing.
    pub processing_time: u64,
    pub timestamp: String,
}

/// Validated audio.
struct Audio {
    bytes: Vec<u8>,
    container: Container,
}

/// Runs `job`, recording it in the history whatever the outcome.
pub fn run(app: &App, job: &Job) -> Result<Outcome, ApiError> {
    let started = Instant::now();
    let inference_id = next_id();
    let result = validate(job.content, app.settings.server.max_body_bytes).and_then(|audio| {
        let wav_duration = wav_duration(&audio);
        let form = preprocess(audio, job);
        let served = execute(app, job.model, &form, job.deadline)?;
        let transcript = postprocess(&served.reply.body, job, wav_duration)?;
        Ok((transcript, served.worker_id, served.port))
    });
    let processing_time = started.elapsed().as_millis() as u64;
    let timestamp = crate::clock::now_rfc3339();
    record(
        app,
        job.model,
        &inference_id,
        processing_time,
        &timestamp,
        result.as_ref().err(),
    );
    let (transcript, worker_id, worker_port) = result?;
    Ok(Outcome {
        inference_id,
        transcript,
        worker_id,
        worker_port,
        processing_time,
        timestamp,
    })
}

/// Stage 1: non-empty, decodable base64, a size worth sending, a container whisper reads.
fn validate(content: &str, max_bytes: u64) -> Result<Audio, ApiError> {
    let (bytes, container) = audio::decode_audio(content).map_err(ApiError::InvalidRequest)?;
    if bytes.len() < MIN_AUDIO_BYTES {
        return Err(ApiError::InvalidRequest(format!(
            "the audio is {} bytes: too short to hold any sound",
            bytes.len()
        )));
    }
    if bytes.len() as u64 > max_bytes {
        return Err(ApiError::PayloadTooLarge { limit: max_bytes });
    }
    Ok(Audio { bytes, container })
}

fn wav_duration(audio: &Audio) -> Option<f64> {
    (audio.container == Container::Wav)
        .then(|| audio::wav_duration_secs(&audio.bytes))
        .flatten()
}

/// Stage 2: the worker's form: the file under a name of its container, the format for the
/// detail asked for, the language.
fn preprocess(audio: Audio, job: &Job) -> InferenceForm {
    InferenceForm {
        file_name: audio.container.file_name().to_string(),
        audio: audio.bytes,
        response_format: if job.timestamps {
            "verbose_json"
        } else {
            "json"
        }
        .to_string(),
        language: job.language.clone(),
        ..InferenceForm::default()
    }
}

/// Stage 3: the pool runs it before the deadline (queueing at capacity); a worker that misses
/// the deadline is recycled and its late answer never reaches anyone. The OpenAI route, whose
/// forms need no other stage, calls this directly.
pub fn execute(
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

/// Stage 4: the worker's JSON as a `Transcript`.
fn postprocess(body: &[u8], job: &Job, wav_duration: Option<f64>) -> Result<Transcript, ApiError> {
    let reply: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::WorkerError(format!(
            "the worker answered with something that is not JSON: {e}"
        ))
    })?;
    Ok(Transcript::from_worker(
        &reply,
        job.language.as_deref(),
        wav_duration,
    ))
}

/// Stage 5: the history ring.
fn record(
    app: &App,
    model: &str,
    inference_id: &str,
    processing_time: u64,
    timestamp: &str,
    error: Option<&ApiError>,
) {
    app.history.record(Entry {
        inference_id: inference_id.to_string(),
        model_id: model.to_string(),
        processing_time,
        timestamp: timestamp.to_string(),
        success: error.is_none(),
        error: error.map(|e| e.code().to_string()),
    });
}

/// `inf-<seconds since epoch, hex>-<counter>`: unique within a run and across restarts.
fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    format!("inf-{boot:x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    #[test]
    fn validation_refuses_empty_short_junk_and_oversized_audio() {
        assert!(matches!(
            validate("", 1000),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            validate(&b64(b"RIFF\0\0\0\0WAVE"), 1000),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            validate(&b64(&[7u8; 100]), 1000),
            Err(ApiError::InvalidRequest(_))
        ));
        let wav = crate::audio::tests::silent_wav(100);
        assert!(matches!(
            validate(&b64(&wav), 100),
            Err(ApiError::PayloadTooLarge { limit: 100 })
        ));
        let audio = validate(&b64(&wav), 10_000).unwrap();
        assert_eq!(
            (audio.container, wav_duration(&audio)),
            (Container::Wav, Some(100.0 / 16_000.0))
        );
    }

    #[test]
    fn preprocessing_picks_the_format_for_the_detail_asked() {
        let wav = crate::audio::tests::silent_wav(100);
        let job = Job {
            model: "m",
            content: "",
            language: Some("de".into()),
            timestamps: true,
            deadline: Instant::now(),
        };
        let form = preprocess(validate(&b64(&wav), 10_000).unwrap(), &job);
        assert_eq!(
            (form.response_format.as_str(), form.file_name.as_str()),
            ("verbose_json", "audio.wav")
        );
        assert_eq!(form.language.as_deref(), Some("de"));
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(next_id(), next_id());
    }
}
