//! OpenAI's audio API as its SDKs call it: `POST /v1/audio/transcriptions`,
//! `POST /v1/audio/translations` (multipart), `GET /v1/models` and `GET /v1/models/{id}`.
//! Errors here take OpenAI's shape (`api::error_reply`).
//!
//! The uploaded file goes through the engine's stages like every other transcription
//! (history, metrics, limits), and every `response_format` is derived from the one answer the
//! engine asks the worker for (`engine::transcript`).

use std::sync::Arc;

use std::time::Instant;

use serde_json::{json, Value};

use super::stream::{self, Shape};
use crate::engine::inference::{Budget, Input, Job, Options};
use crate::engine::transcript::Transcript;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::multipart::{self, FormError, Part};
use crate::http::{Incoming, Reply};

/// `response_format` values and the content type each is answered with.
const FORMATS: &[(&str, &str)] = &[
    ("json", "application/json"),
    ("verbose_json", "application/json"),
    ("text", "text/plain; charset=utf-8"),
    ("srt", "application/x-subrip; charset=utf-8"),
    ("vtt", "text/vtt; charset=utf-8"),
];

/// The fields of a transcription or translation request, checked.
#[derive(Debug, Default)]
struct AudioForm {
    file: Vec<u8>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<&'static str>,
    temperature: Option<f64>,
    /// `timestamp_granularities[]=segment`.
    segments: bool,
    /// `timestamp_granularities[]=word`.
    words: bool,
    /// `include[]=logprobs`.
    logprobs: bool,
    /// `stream=true`: server-sent events as the transcript is made.
    stream: bool,
}

/// Which of the two audio routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Transcribe,
    /// Into English, whatever the spoken language.
    Translate,
}

pub fn transcriptions(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    audio(engine, rq, Task::Transcribe)
}

pub fn translations(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    audio(engine, rq, Task::Translate)
}

fn audio(engine: &Arc<Engine>, rq: &mut Incoming, task: Task) -> Result<Reply, ApiError> {
    let deadline = Instant::now() + engine.settings.server.request_timeout();
    let boundary = rq
        .header("Content-Type")
        .and_then(multipart::boundary_of)
        .ok_or_else(|| {
            ApiError::InvalidRequest(
                "send the audio as multipart/form-data with a boundary, as the OpenAI SDKs do"
                    .into(),
            )
        })?;
    let parts = rq.with_body(|body| {
        multipart::read_form(body, &boundary).map_err(|e| match e {
            FormError::Malformed(why) => ApiError::InvalidRequest(why),
            FormError::Read(e) => {
                ApiError::InvalidRequest(format!("the request body could not be read: {e}"))
            }
        })
    })?;
    let form = AudioForm::from_parts(parts)?;
    let format = form.response_format.unwrap_or("json");
    form.check_format(format)?;
    let detail = Granularity::of(&form);
    // OpenAI's translations take no language: the audio's is detected.
    let language = match task {
        Task::Transcribe => form.language.as_deref(),
        Task::Translate => None,
    };
    let model = engine.resolve_model(form.model.as_deref())?.to_string();
    let options = Options::checked(
        language,
        form.prompt,
        form.temperature,
        task == Task::Translate,
    )?;
    let budget = Budget::PerChunk {
        wait_until: deadline,
    };
    if form.stream && task == Task::Transcribe {
        let engine = Arc::clone(engine);
        let file = form.file;
        return stream::start(Shape::OpenAi, move |progress| {
            let job = Job {
                model: &model,
                input: Input::File(file),
                options,
                budget,
            };
            let text = engine.transcribe_streaming(job, progress)?.result.text;
            Ok(json!({ "type": "transcript.text.done", "text": text }))
        });
    }
    let job = Job {
        model: &model,
        input: Input::File(form.file),
        options,
        budget,
    };
    let peer = rq.peer();
    let transcript = engine.transcribe_while(job, &|| !peer.hung_up())?.result;
    Ok(shape(&transcript, format, &detail))
}

/// What `verbose_json` and `json` carry beyond the text.
struct Granularity {
    segments: bool,
    words: bool,
    logprobs: bool,
}

impl Granularity {
    /// OpenAI's defaults: `verbose_json` has segments unless only words were asked for.
    fn of(form: &AudioForm) -> Granularity {
        Granularity {
            segments: form.segments || !form.words,
            words: form.words,
            logprobs: form.logprobs,
        }
    }
}

/// The transcript in the requested format, with that format's content type.
fn shape(t: &Transcript, format: &str, detail: &Granularity) -> Reply {
    let content_type = FORMATS
        .iter()
        .find(|(f, _)| *f == format)
        .map_or("application/json", |(_, t)| t);
    match format {
        "verbose_json" => Reply::ok(&t.to_openai_verbose(detail.segments, detail.words)),
        "text" => Reply::text(content_type, t.to_text().into_bytes()),
        "srt" => Reply::text(content_type, t.to_srt().into_bytes()),
        "vtt" => Reply::text(content_type, t.to_vtt().into_bytes()),
        _ if detail.logprobs => Reply::ok(&json!({ "text": t.text, "logprobs": t.logprobs() })),
        _ => Reply::ok(&json!({ "text": t.text })),
    }
}

impl AudioForm {
    /// Checks every field OpenAI defines; unknown fields are ignored, as OpenAI does.
    fn from_parts(parts: Vec<Part>) -> Result<AudioForm, ApiError> {
        let mut form = AudioForm::default();
        for part in parts {
            match part.name.as_str() {
                "file" => form.file = part.data,
                "model" => form.model = Some(text(&part, "model")?),
                "language" => form.language = Some(text(&part, "language")?),
                "prompt" => form.prompt = Some(text(&part, "prompt")?),
                "response_format" => form.response_format = Some(response_format(&part)?),
                "temperature" => form.temperature = Some(number(&part, "temperature")?),
                "timestamp_granularities[]" | "timestamp_granularities" => {
                    match text(&part, "timestamp_granularities[]")?.as_str() {
                        "segment" => form.segments = true,
                        "word" => form.words = true,
                        other => {
                            return Err(invalid(
                                "timestamp_granularities[]",
                                other,
                                "`word` or `segment`",
                            ))
                        }
                    }
                }
                "stream" => match text(&part, "stream")?.as_str() {
                    "true" => form.stream = true,
                    "false" => form.stream = false,
                    other => return Err(invalid("stream", other, "`true` or `false`")),
                },
                "include[]" | "include" => match text(&part, "include[]")?.as_str() {
                    "logprobs" => form.logprobs = true,
                    other => return Err(invalid("include[]", other, "`logprobs`")),
                },
                _ => {}
            }
        }
        if form.file.is_empty() {
            return Err(ApiError::InvalidField {
                field: "file",
                why: "a non-empty audio file is required".into(),
            });
        }
        Ok(form)
    }

    /// Granularities come with `verbose_json` only, log-probabilities with `json` only, as in
    /// OpenAI's API; asking otherwise is a mistake worth a 400 rather than silence.
    fn check_format(&self, format: &str) -> Result<(), ApiError> {
        if (self.segments || self.words) && format != "verbose_json" {
            return Err(ApiError::InvalidField {
                field: "timestamp_granularities[]",
                why: "needs response_format verbose_json".into(),
            });
        }
        if self.logprobs && format != "json" {
            return Err(ApiError::InvalidField {
                field: "include[]",
                why: "logprobs needs response_format json".into(),
            });
        }
        if self.stream && !matches!(format, "json" | "text") {
            return Err(ApiError::InvalidField {
                field: "stream",
                why: "streams text deltas, so it needs response_format json or text".into(),
            });
        }
        Ok(())
    }
}

fn invalid(field: &'static str, value: &str, expected: &str) -> ApiError {
    ApiError::InvalidField {
        field,
        why: format!("`{value:.20}` is not {expected}"),
    }
}

fn text(part: &Part, field: &'static str) -> Result<String, ApiError> {
    String::from_utf8(part.data.clone()).map_err(|_| ApiError::InvalidField {
        field,
        why: "not UTF-8 text".into(),
    })
}

fn number(part: &Part, field: &'static str) -> Result<f64, ApiError> {
    let value = text(part, field)?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .ok_or_else(|| invalid(field, &value, "a number"))
}

fn response_format(part: &Part) -> Result<&'static str, ApiError> {
    let value = text(part, "response_format")?;
    FORMATS
        .iter()
        .map(|(f, _)| *f)
        .find(|f| *f == value)
        .ok_or_else(|| {
            invalid(
                "response_format",
                &value,
                "one of json, text, srt, vtt, verbose_json",
            )
        })
}

/// `GET /v1/models`: every configured model and every alias, each as a model.
pub fn models(engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let data: Vec<Value> = engine
        .pool
        .config
        .models
        .iter()
        .flat_map(|(id, spec)| std::iter::once(id).chain(&spec.aliases))
        .map(|name| model_object(engine, name))
        .collect();
    Ok(Reply::ok(&json!({ "object": "list", "data": data })))
}

/// `GET /v1/models/{id}`: one model or alias, or OpenAI's 404.
pub fn model(engine: &Arc<Engine>, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let name = rq.param(0);
    engine.pool.known_model(name)?;
    Ok(Reply::ok(&model_object(engine, name)))
}

fn model_object(engine: &Arc<Engine>, name: &str) -> Value {
    json!({ "id": name, "object": "model", "created": engine.boot_id, "owned_by": "inference-server-manager" })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, value: &str) -> Part {
        Part {
            name: name.into(),
            file_name: None,
            data: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn a_full_form_is_read() {
        let form = AudioForm::from_parts(vec![
            part("response_format", "verbose_json"),
            part("file", "RIFF"),
            part("model", "whisper-1"),
            part("language", "en"),
            part("temperature", "0.2"),
            part("timestamp_granularities[]", "word"),
            part("timestamp_granularities[]", "segment"),
            part("user", "ignored"),
        ])
        .unwrap();
        assert_eq!(form.file, b"RIFF");
        assert_eq!(form.response_format, Some("verbose_json"));
        assert_eq!(form.temperature, Some(0.2));
        assert!(form.words && form.segments && !form.logprobs);
        assert!(form.check_format("verbose_json").is_ok());
    }

    #[test]
    fn bad_fields_are_named() {
        let field_of = |parts: Vec<Part>| match AudioForm::from_parts(parts) {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field_of(vec![part("model", "whisper-1")]), "file");
        assert_eq!(
            field_of(vec![part("file", "x"), part("response_format", "xml")]),
            "response_format"
        );
        assert_eq!(
            field_of(vec![part("file", "x"), part("temperature", "hot")]),
            "temperature"
        );
        assert_eq!(
            field_of(vec![
                part("file", "x"),
                part("timestamp_granularities[]", "char")
            ]),
            "timestamp_granularities[]"
        );
        assert_eq!(
            field_of(vec![part("file", "x"), part("include[]", "everything")]),
            "include[]"
        );
    }

    #[test]
    fn details_come_with_their_format_only() {
        let words = AudioForm {
            words: true,
            ..AudioForm::default()
        };
        assert!(words.check_format("json").is_err());
        let logprobs = AudioForm {
            logprobs: true,
            ..AudioForm::default()
        };
        assert!(logprobs.check_format("verbose_json").is_err());
        assert!(logprobs.check_format("json").is_ok());
    }

    #[test]
    fn every_format_is_derived_from_the_transcript() {
        let t = crate::engine::transcript::tests::read(
            &crate::engine::transcript::tests::jfk(),
            None,
            None,
        );
        let plain = Granularity {
            segments: true,
            words: false,
            logprobs: false,
        };
        let json = shape(&t, "json", &plain);
        assert_eq!(
            json.body,
            br#"{"text":"And so my fellow Americans ask not."}"#
        );
        let srt = shape(&t, "srt", &plain);
        assert_eq!(srt.content_type, "application/x-subrip; charset=utf-8");
        assert!(String::from_utf8(srt.body)
            .unwrap()
            .starts_with("1\n00:00:00,000 --> "));
        let verbose: Value =
            serde_json::from_slice(&shape(&t, "verbose_json", &plain).body).unwrap();
        assert!(verbose["segments"].is_array() && verbose.get("words").is_none());
        let with_logprobs = Granularity {
            logprobs: true,
            ..plain
        };
        let json: Value = serde_json::from_slice(&shape(&t, "json", &with_logprobs).body).unwrap();
        assert_eq!(json["logprobs"].as_array().unwrap().len(), 8);
    }
}
