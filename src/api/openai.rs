//! The OpenAI-compatible routes: `POST /v1/audio/transcriptions` (multipart, as OpenAI's audio
//! API defines it) and `GET /v1/models`, so OpenAI SDK clients work unchanged. Errors here take
//! OpenAI's shape (see `http::router::error_reply`).
//!
//! The uploaded file goes to the worker as it came, through the engine's stages like every
//! other transcription (history, metrics, limits), with no base64 round trip. whisper-server
//! already speaks the same `response_format`s, so its answer is passed back with the content
//! type of the format, only the JSON `text` made one clean line.

use std::time::Instant;

use serde_json::{json, Value};

use crate::engine::inference::{Input, Job};
use crate::engine::transcript::clean_text;
use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::multipart::{self, FormError, Part};
use crate::http::{Incoming, Reply};

/// The model name OpenAI clients send by default; it means the served model.
const OPENAI_MODEL: &str = "whisper-1";

/// `response_format` values and the content type each is answered with.
const FORMATS: &[(&str, &str)] = &[
    ("json", "application/json"),
    ("verbose_json", "application/json"),
    ("text", "text/plain; charset=utf-8"),
    ("srt", "application/x-subrip; charset=utf-8"),
    ("vtt", "text/vtt; charset=utf-8"),
];

/// The fields of an OpenAI transcription request, checked.
#[derive(Debug, Default)]
struct TranscriptionForm {
    file: Vec<u8>,
    model: Option<String>,
    language: Option<String>,
    prompt: Option<String>,
    response_format: Option<&'static str>,
    temperature: Option<f32>,
}

pub fn transcriptions(engine: &Engine, rq: &mut Incoming) -> Result<Reply, ApiError> {
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
    let form = TranscriptionForm::from_parts(parts)?;
    let requested_model = form.model.as_deref().filter(|m| *m != OPENAI_MODEL);
    let model = engine.resolve_model(requested_model)?;
    let format = form.response_format.unwrap_or("json");
    let job = Job {
        model,
        input: Input::File(form.file),
        response_format: format,
        language: form.language,
        prompt: form.prompt,
        temperature: form.temperature,
        deadline,
        client_deadline: None,
    };
    let outcome = engine.transcribe(job, |answer| shape_reply(format, answer.body))?;
    Ok(outcome.shaped)
}

/// The worker's answer in the requested format.
fn shape_reply(format: &str, body: Vec<u8>) -> Result<Reply, ApiError> {
    let content_type = FORMATS
        .iter()
        .find(|(f, _)| *f == format)
        .map_or("application/json", |(_, t)| t);
    if content_type != "application/json" {
        return Ok(Reply::text(content_type, body));
    }
    let mut value: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::WorkerError(format!(
            "the worker answered {format} that is not JSON: {e}"
        ))
    })?;
    if let Some(text) = value.get("text").and_then(Value::as_str) {
        value["text"] = Value::String(clean_text(text));
    }
    Ok(Reply::ok(&value))
}

impl TranscriptionForm {
    /// Checks every field OpenAI defines; unknown fields are ignored, as OpenAI does.
    fn from_parts(parts: Vec<Part>) -> Result<TranscriptionForm, ApiError> {
        let mut form = TranscriptionForm::default();
        for part in parts {
            match part.name.as_str() {
                "file" => form.file = part.data,
                "model" => form.model = Some(text(&part, "model")?),
                "language" => form.language = Some(language(&part)?),
                "prompt" => form.prompt = Some(text(&part, "prompt")?),
                "response_format" => form.response_format = Some(response_format(&part)?),
                "temperature" => form.temperature = Some(temperature(&part)?),
                "timestamp_granularities[]" | "timestamp_granularities" => granularity(&part)?,
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
}

fn text(part: &Part, field: &'static str) -> Result<String, ApiError> {
    String::from_utf8(part.data.clone()).map_err(|_| ApiError::InvalidField {
        field,
        why: "not UTF-8 text".into(),
    })
}

/// An ISO 639-1 style code (`en`, `de`, `yue`) or `auto`: short and alphabetic, so nothing
/// odd reaches the worker's command parser.
fn language(part: &Part) -> Result<String, ApiError> {
    let value = text(part, "language")?;
    let valid = (2..=8).contains(&value.len()) && value.chars().all(|c| c.is_ascii_alphabetic());
    if valid {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(ApiError::InvalidField {
            field: "language",
            why: format!("`{value:.20}` is not a language code such as `en`"),
        })
    }
}

fn response_format(part: &Part) -> Result<&'static str, ApiError> {
    let value = text(part, "response_format")?;
    FORMATS
        .iter()
        .map(|(f, _)| *f)
        .find(|f| *f == value)
        .ok_or_else(|| ApiError::InvalidField {
            field: "response_format",
            why: format!("`{value:.20}` is not one of json, text, srt, vtt, verbose_json"),
        })
}

fn temperature(part: &Part) -> Result<f32, ApiError> {
    let value = text(part, "temperature")?;
    match value.trim().parse::<f32>() {
        Ok(t) if (0.0..=1.0).contains(&t) => Ok(t),
        _ => Err(ApiError::InvalidField {
            field: "temperature",
            why: format!("`{value:.20}` is not a number from 0 to 1"),
        }),
    }
}

/// whisper-server always returns segments with word timings in `verbose_json`, so both
/// granularities are served; anything else is refused.
fn granularity(part: &Part) -> Result<(), ApiError> {
    let value = text(part, "timestamp_granularities[]")?;
    match value.as_str() {
        "word" | "segment" => Ok(()),
        _ => Err(ApiError::InvalidField {
            field: "timestamp_granularities[]",
            why: format!("`{value:.20}` is not `word` or `segment`"),
        }),
    }
}

/// `GET /v1/models`: the served model, and `whisper-1`, which means the same.
pub fn models(engine: &Engine, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    let created = engine.boot_id;
    let model = |id: &str| json!({ "id": id, "object": "model", "created": created, "owned_by": "inference-server-manager" });
    Ok(Reply::ok(&json!({
        "object": "list",
        "data": [model(OPENAI_MODEL), model(&engine.pool.config.model)],
    })))
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
        let form = TranscriptionForm::from_parts(vec![
            part("response_format", "srt"),
            part("file", "RIFF"),
            part("model", "whisper-1"),
            part("language", "EN"),
            part("temperature", "0.2"),
            part("timestamp_granularities[]", "word"),
            part("user", "ignored"),
        ])
        .unwrap();
        assert_eq!(form.file, b"RIFF");
        assert_eq!(form.language.as_deref(), Some("en"));
        assert_eq!(form.response_format, Some("srt"));
        assert_eq!(form.temperature, Some(0.2));
    }

    #[test]
    fn bad_fields_are_named() {
        let field_of = |parts: Vec<Part>| match TranscriptionForm::from_parts(parts) {
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
            field_of(vec![part("file", "x"), part("temperature", "1.5")]),
            "temperature"
        );
        assert_eq!(
            field_of(vec![part("file", "x"), part("language", "-m /etc/passwd")]),
            "language"
        );
        assert_eq!(
            field_of(vec![
                part("file", "x"),
                part("timestamp_granularities[]", "char")
            ]),
            "timestamp_granularities[]"
        );
    }

    #[test]
    fn json_text_is_cleaned_and_other_formats_pass_through() {
        let reply = shape_reply("json", br#"{"text":" a\n b\n"}"#.to_vec()).unwrap();
        assert_eq!(reply.body, br#"{"text":"a b"}"#);
        let srt = shape_reply("srt", b"1\n00:00:00,000 --> 00:00:01,000\nhi\n".to_vec()).unwrap();
        assert_eq!(srt.content_type, "application/x-subrip; charset=utf-8");
        assert!(shape_reply("json", b"not json".to_vec()).is_err());
    }
}
