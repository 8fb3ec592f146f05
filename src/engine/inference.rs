//! One run of audio through the pool, in the stages the README's "The inference engine"
//! names, each a small function: validate, preprocess, execute (under a deadline),
//! postprocess, record. `/api/v1/transcriptions`, `/api/inference/:modelId`, the
//! `runInference` RPC, language detection and the OpenAI routes all run through here, so they
//! share limits, the capacity cap, metrics and the history.
//!
//! Every run asks the worker for the same shape (see `worker_fields`), and every format a
//! route answers with is derived from it (`engine::transcript`): `timestamps: true` costs what
//! `false` costs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::history::Entry;
use super::languages;
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

/// What a request may ask of the worker beyond the audio; every value already validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// A code from `languages`, or `auto`; absent means the worker's default (`en`).
    pub language: Option<String>,
    /// Text that primes the decoder: names, spellings, the previous passage.
    pub prompt: Option<String>,
    /// 0 to 1.
    pub temperature: Option<f32>,
    /// Translate into English (a multilingual model only).
    pub translate: bool,
}

/// Longest `prompt` taken, in bytes: whisper keeps only the last 224 tokens of a prompt (half
/// its text context), about 1,000 characters of English; four times that is surely a mistake.
const MAX_PROMPT_BYTES: usize = 4096;

impl Options {
    /// Checks what a client sent, naming the field at fault: `language` must be `auto` or a
    /// code whisper knows, `temperature` a number from 0 to 1, `prompt` at most
    /// `MAX_PROMPT_BYTES`. whisper-server would answer a bad number with a 500 and an unknown
    /// language with an error of its own.
    pub fn checked(
        language: Option<&str>,
        prompt: Option<String>,
        temperature: Option<f64>,
        translate: bool,
    ) -> Result<Options, ApiError> {
        let language = match language.map(str::trim) {
            None | Some("") => None,
            Some(l) if l.eq_ignore_ascii_case("auto") => Some("auto".to_string()),
            Some(l) => Some(
                languages::code_of(l)
                    .filter(|code| code.eq_ignore_ascii_case(l))
                    .ok_or_else(|| ApiError::InvalidField {
                        field: "language",
                        why: format!("`{l:.20}` is not `auto` or a language code whisper knows, such as `en`"),
                    })?
                    .to_string(),
            ),
        };
        if prompt.as_ref().is_some_and(|p| p.len() > MAX_PROMPT_BYTES) {
            return Err(ApiError::InvalidField {
                field: "prompt",
                why: format!("is longer than {MAX_PROMPT_BYTES} bytes (whisper reads only its last 224 tokens)"),
            });
        }
        let temperature = match temperature {
            None => None,
            Some(t) if (0.0..=1.0).contains(&t) => Some(t as f32),
            Some(t) => {
                return Err(ApiError::InvalidField {
                    field: "temperature",
                    why: format!("{t} is not a number from 0 to 1"),
                })
            }
        };
        Ok(Options {
            language,
            prompt: prompt.filter(|p| !p.is_empty()),
            temperature,
            translate,
        })
    }
}

/// A request to the engine.
#[derive(Debug)]
pub struct Job<'a> {
    /// A model id already checked against the settings.
    pub model: &'a str,
    pub input: Input<'a>,
    pub options: Options,
    /// The server's deadline for the whole run, queue wait included: a worker still busy then
    /// overran the time it was given, and is recycled.
    pub deadline: Instant,
    /// A shorter deadline the client chose (`options.timeout`): when it passes first, the
    /// connection to the worker is closed (whisper-server then aborts the inference) and the
    /// worker stays.
    pub client_deadline: Option<Instant>,
}

/// What the worker is asked to do with the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Transcribe,
    DetectLanguage,
}

/// A detected language (`POST /api/v1/languages/detect`).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// An ISO 639-1 code.
    pub language: String,
    /// The detector's probability for it, 0 to 1.
    pub probability: f64,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    pub inference_id: String,
    pub result: T,
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
    /// Transcribes (or translates) `job`'s audio and records the run in the history.
    pub fn transcribe(&self, job: Job) -> Result<Outcome<Transcript>, ApiError> {
        self.run(job, Task::Transcribe, |reply, language, wav_duration| {
            Ok(Transcript::from_verbose_json(reply, language, wav_duration))
        })
    }

    /// Detects the language spoken in `job`'s audio, with whisper's own detector.
    pub fn detect_language(&self, job: Job) -> Result<Outcome<Detection>, ApiError> {
        self.run(job, Task::DetectLanguage, |reply, _, _| detection(reply))
    }

    /// The stages, in order, with `postprocess` reading the worker's `verbose_json`; the run
    /// is recorded in the history whatever the outcome.
    fn run<T>(
        &self,
        job: Job,
        task: Task,
        postprocess: impl FnOnce(&Value, Option<&str>, Option<f64>) -> Result<T, ApiError>,
    ) -> Result<Outcome<T>, ApiError> {
        let started = Instant::now();
        let inference_id = next_id();
        let Job {
            model,
            input,
            options,
            deadline,
            client_deadline,
        } = job;
        let deadline = Deadline::new(deadline, client_deadline, started);
        let result = self
            .check_model_can(model, task, &options)
            .and_then(|()| validate(input, self.settings.server.max_body_bytes))
            .and_then(|audio| {
                let wav_duration = audio.wav_duration();
                let form = InferenceForm {
                    file_name: audio.container.file_name(),
                    audio: audio.bytes,
                    fields: self.worker_fields(task, &options),
                };
                let served = self.execute(model, &form, deadline)?;
                let reply: Value = serde_json::from_slice(&served.reply.body).map_err(|e| {
                    ApiError::WorkerError(format!(
                        "the worker answered with something that is not JSON: {e}"
                    ))
                })?;
                let result = postprocess(&reply, options.language.as_deref(), wav_duration)?;
                Ok((result, served.worker_id, served.port))
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
        let (result, worker_id, worker_port) = result?;
        Ok(Outcome {
            inference_id,
            result,
            worker_id,
            worker_port,
            processing_time,
            timestamp,
        })
    }

    /// An English-only model cannot translate or detect a language; whisper-server would
    /// silently answer an English transcript (or a meaningless guess) instead.
    fn check_model_can(&self, model: &str, task: Task, options: &Options) -> Result<(), ApiError> {
        let what = match task {
            Task::DetectLanguage => "detect a language",
            Task::Transcribe if options.translate => "translate",
            Task::Transcribe => return Ok(()),
        };
        let english_only = self
            .pool
            .config
            .models
            .get(model)
            .is_some_and(|m| m.english_only);
        if english_only {
            return Err(ApiError::InvalidRequest(format!(
                "model `{model}` is English-only (its file name ends in .en), so it cannot {what}; \
                 configure a multilingual model (README \"Real whisper\") and name it in `model`"
            )));
        }
        Ok(())
    }

    /// Stage 2, the worker's fields: always `verbose_json` with segments cut on word
    /// boundaries (every format is derived from it) and without per-language probabilities
    /// (they cost as much as the transcription and nothing uses them), then the request's
    /// options and the decoder settings of `whisperServer`.
    fn worker_fields(&self, task: Task, options: &Options) -> Vec<(&'static str, String)> {
        let ws = &self.settings.whisper_server;
        let mut fields = vec![
            ("response_format", "verbose_json".to_string()),
            ("split_on_word", "true".to_string()),
        ];
        match task {
            Task::Transcribe => fields.push(("no_language_probabilities", "true".into())),
            // The detector's probability comes with the language probabilities.
            Task::DetectLanguage => fields.push(("detect_language", "true".into())),
        }
        if let Some(language) = &options.language {
            fields.push(("language", language.clone()));
        }
        if let Some(prompt) = &options.prompt {
            fields.push(("prompt", prompt.clone()));
        }
        if let Some(temperature) = options.temperature {
            fields.push(("temperature", temperature.to_string()));
        }
        if options.translate {
            fields.push(("translate", "true".into()));
        }
        fields.extend([
            ("entropy_thold", ws.entropy_threshold.to_string()),
            ("logprob_thold", ws.logprob_threshold.to_string()),
            ("no_speech_thold", ws.no_speech_threshold.to_string()),
            ("best_of", ws.best_of.to_string()),
        ]);
        if ws.beam_size > 1 {
            fields.push(("beam_size", ws.beam_size.to_string()));
        }
        if ws.suppress_non_speech {
            fields.push(("suppress_nst", "true".into()));
        }
        fields
    }

    /// Stage 3: the pool runs the form before the deadline (queueing at capacity); a worker
    /// that misses the deadline is recycled and its late answer never reaches anyone.
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

/// Stage 4 of a detection: whisper-server names the language and gives its probability.
fn detection(reply: &Value) -> Result<Detection, ApiError> {
    let name = reply
        .get("detected_language")
        .or_else(|| reply.get("language"))
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::WorkerError("the worker detected no language".into()))?;
    let language = languages::code_of(name).ok_or_else(|| {
        ApiError::WorkerError(format!(
            "the worker detected `{name:.40}`, which whisper does not know"
        ))
    })?;
    Ok(Detection {
        language: language.to_string(),
        probability: reply
            .get("detected_language_probability")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
    })
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
    fn a_detection_is_a_code_and_a_probability() {
        let reply = serde_json::json!({"language": "german", "detected_language": "german",
                                        "detected_language_probability": 0.93});
        assert_eq!(
            detection(&reply).unwrap(),
            Detection {
                language: "de".into(),
                probability: 0.93
            }
        );
        assert!(detection(&serde_json::json!({"language": "elvish"})).is_err());
    }

    #[test]
    fn options_are_checked_and_name_the_field() {
        let field = |r: Result<Options, ApiError>| match r {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(Options::checked(Some("xx"), None, None, false)),
            "language"
        );
        assert_eq!(
            field(Options::checked(Some("english"), None, None, false)),
            "language"
        );
        assert_eq!(
            field(Options::checked(None, None, Some(1.5), false)),
            "temperature"
        );
        assert_eq!(
            field(Options::checked(None, Some("p".repeat(5000)), None, false)),
            "prompt"
        );
        let ok = Options::checked(Some("DE"), Some(String::new()), Some(0.2), true).unwrap();
        assert_eq!(ok.language.as_deref(), Some("de"));
        assert_eq!(
            (ok.prompt, ok.temperature, ok.translate),
            (None, Some(0.2), true)
        );
        let auto = Options::checked(Some("Auto"), None, None, false).unwrap();
        assert_eq!(auto.language.as_deref(), Some("auto"));
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(next_id(), next_id());
    }
}
