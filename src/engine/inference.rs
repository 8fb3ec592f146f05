//! One transcription through the pool, in the stages the README's "The inference engine"
//! names, each a small function: validate, preprocess, execute (under a deadline),
//! postprocess, record. `/api/v1/transcriptions`, `/api/inference/:modelId`, the
//! `runInference` RPC and `/v1/audio/transcriptions` all run through here, so they share
//! limits, the capacity cap, metrics and the history.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::history::Entry;
use super::transcript::Transcript;
use super::Engine;
use crate::audio::{self, Container};
use crate::error::ApiError;
use crate::pool::client::InferenceForm;
use crate::pool::dispatch::{Deadline, Served};

/// Fewer bytes than a WAV header cannot be audio worth sending to a worker.
const MIN_AUDIO_BYTES: usize = 44;

/// The audio as a transport received it.
#[derive(Debug)]
pub enum Input<'a> {
    /// Base64 in a JSON field (`content`, `inputData`); refusals name the JSON.
    Base64(&'a str),
    /// The bytes of an uploaded file (the multipart `file` part); refusals name `file`.
    File(Vec<u8>),
}

/// A request to the engine.
#[derive(Debug)]
pub struct Job<'a> {
    /// A model id already checked against the settings.
    pub model: &'a str,
    pub input: Input<'a>,
    /// What the worker is asked for: `json`, `verbose_json`, `text`, `srt` or `vtt`.
    pub response_format: &'static str,
    pub language: Option<String>,
    pub prompt: Option<String>,
    pub temperature: Option<f32>,
    /// The server's deadline for the whole run, queue wait included: a worker still busy then
    /// overran the time it was given, and is recycled.
    pub deadline: Instant,
    /// A shorter deadline the client chose (`options.timeout`): when it passes first, the
    /// connection to the worker is closed (whisper-server then aborts the inference) and the
    /// worker stays.
    pub client_deadline: Option<Instant>,
}

impl Job<'_> {
    /// The worker format that gives a `Transcript` with (`verbose_json`: segments, duration,
    /// confidence) or without timestamps (`json`: text only).
    pub fn transcript_format(timestamps: bool) -> &'static str {
        if timestamps {
            "verbose_json"
        } else {
            "json"
        }
    }
}

/// The worker's answer, handed to the caller's postprocessing.
#[derive(Debug)]
pub struct Answer<'a> {
    pub body: Vec<u8>,
    /// The length of the audio when it was a WAV (whisper's `json` carries none).
    pub wav_duration: Option<f64>,
    /// The language the request asked for.
    pub language: Option<&'a str>,
}

impl Answer<'_> {
    /// The answer of a `json` or `verbose_json` request as a `Transcript`.
    pub fn transcript(self) -> Result<Transcript, ApiError> {
        let reply: serde_json::Value = serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::WorkerError(format!(
                "the worker answered with something that is not JSON: {e}"
            ))
        })?;
        Ok(Transcript::from_worker(
            &reply,
            self.language,
            self.wav_duration,
        ))
    }
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    pub inference_id: String,
    /// What the caller's postprocessing made of the worker's answer.
    pub shaped: T,
    pub worker_id: String,
    pub worker_port: u16,
    /// Milliseconds from the start of validation to the end of postprocessing.
    pub processing_time: u64,
    pub timestamp: String,
}

/// Validated audio.
#[derive(Debug)]
struct Audio {
    bytes: Vec<u8>,
    container: Container,
}

impl Audio {
    fn wav_duration(&self) -> Option<f64> {
        (self.container == Container::Wav)
            .then(|| audio::wav_duration_secs(&self.bytes))
            .flatten()
    }
}

impl Engine {
    /// Runs `job`, with `postprocess` turning the worker's answer into what the route
    /// returns, and records it in the history whatever the outcome.
    pub fn transcribe<T>(
        &self,
        job: Job,
        postprocess: impl FnOnce(Answer) -> Result<T, ApiError>,
    ) -> Result<Outcome<T>, ApiError> {
        let started = Instant::now();
        let inference_id = next_id();
        let Job {
            model,
            input,
            response_format,
            language,
            prompt,
            temperature,
            deadline,
            client_deadline,
        } = job;
        let deadline = Deadline::new(deadline, client_deadline, started);
        let result = validate(input, self.settings.server.max_body_bytes).and_then(|audio| {
            let wav_duration = audio.wav_duration();
            let form = InferenceForm {
                file_name: audio.container.file_name().to_string(),
                audio: audio.bytes,
                response_format: response_format.to_string(),
                language: language.clone(),
                prompt,
                temperature,
            };
            let served = self.execute(model, &form, deadline)?;
            let shaped = postprocess(Answer {
                body: served.reply.body,
                wav_duration,
                language: language.as_deref(),
            })?;
            Ok((shaped, served.worker_id, served.port))
        });
        let processing_time = started.elapsed().as_millis() as u64;
        let timestamp = crate::clock::now_rfc3339();
        self.history.record(Entry {
            inference_id: inference_id.clone(),
            model_id: model.to_string(),
            processing_time,
            timestamp: timestamp.clone(),
            success: result.is_ok(),
            error: result.as_ref().err().map(|e| e.code().to_string()),
        });
        let (shaped, worker_id, worker_port) = result?;
        Ok(Outcome {
            inference_id,
            shaped,
            worker_id,
            worker_port,
            processing_time,
            timestamp,
        })
    }

    /// The pool runs the form before the deadline (queueing at capacity); a worker that
    /// misses the deadline is recycled and its late answer never reaches anyone.
    fn execute(
        &self,
        model: &str,
        form: &InferenceForm,
        deadline: Deadline,
    ) -> Result<Served, ApiError> {
        let started = Instant::now();
        let served = self.pool.infer(model, form, deadline)?;
        self.metrics.record_inference(model, started.elapsed());
        Ok(served)
    }
}

/// Stage 1: decodable, a size worth sending, a container whisper reads.
fn validate(input: Input, max_bytes: u64) -> Result<Audio, ApiError> {
    let (bytes, container) = match input {
        Input::Base64(content) => audio::decode_audio(content).map_err(ApiError::InvalidRequest)?,
        Input::File(bytes) => {
            let container = audio::sniff(&bytes).ok_or_else(|| ApiError::InvalidField {
                field: "file",
                why: "not audio whisper-server can read: send WAV, MP3, FLAC or Ogg".into(),
            })?;
            (bytes, container)
        }
    };
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
            validate(Input::Base64(""), 1000),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            validate(Input::Base64(&b64(b"RIFF\0\0\0\0WAVE")), 1000),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            validate(Input::Base64(&b64(&[7u8; 100])), 1000),
            Err(ApiError::InvalidRequest(_))
        ));
        let wav = crate::audio::tests::silent_wav(100);
        assert!(matches!(
            validate(Input::Base64(&b64(&wav)), 100),
            Err(ApiError::PayloadTooLarge { limit: 100 })
        ));
        let audio = validate(Input::Base64(&b64(&wav)), 10_000).unwrap();
        assert_eq!(
            (audio.container, audio.wav_duration()),
            (Container::Wav, Some(100.0 / 16_000.0))
        );
    }

    #[test]
    fn an_uploaded_file_that_is_not_audio_names_the_file_field() {
        match validate(Input::File(b"hello, not audio".to_vec()), 1000) {
            Err(ApiError::InvalidField { field, .. }) => assert_eq!(field, "file"),
            other => panic!("{other:?}"),
        }
        let wav = crate::audio::tests::silent_wav(100);
        assert_eq!(
            validate(Input::File(wav), 10_000).unwrap().container,
            Container::Wav
        );
    }

    #[test]
    fn the_format_follows_the_detail_asked() {
        assert_eq!(Job::transcript_format(true), "verbose_json");
        assert_eq!(Job::transcript_format(false), "json");
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(next_id(), next_id());
    }
}
