//! `POST /api/v1/transcriptions`: base64 audio in JSON, a transcript out, in the shapes of the
//! original transcription service (SPEC section 6, seed 1).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::clean_text;
use crate::app::App;
use crate::audio;
use crate::error::ApiError;
use crate::http::request::Incoming;
use crate::http::response::Reply;
use crate::pool::client::InferenceForm;

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
    let mut request: TranscriptionRequest = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not the expected JSON: {e}")))?;
    drop(body);
    let model = super::resolve_model(app, request.model.as_deref())?;
    let (audio, container) =
        audio::decode_audio(&request.content).map_err(ApiError::InvalidRequest)?;
    // The base64 text is as large as the upload; free it before the worker call.
    request.content = String::new();
    let timestamps = request.timestamps.unwrap_or(true);
    let wav_duration = (container == audio::Container::Wav)
        .then(|| audio::wav_duration_secs(&audio))
        .flatten();
    let form = InferenceForm {
        audio,
        file_name: container.file_name().to_string(),
        response_format: if timestamps { "verbose_json" } else { "json" }.to_string(),
        language: request.language.clone(),
        ..InferenceForm::default()
    };
    let served = super::infer(app, model, &form, deadline)?;
    let reply: Value = serde_json::from_slice(&served.reply.body).map_err(|e| {
        ApiError::WorkerError(format!(
            "{} answered with something that is not JSON: {e}",
            served.worker_id
        ))
    })?;
    let mut metadata = request.metadata.unwrap_or_default();
    metadata.insert("worker_id".into(), served.worker_id.clone());
    metadata.insert(
        "worker_url".into(),
        format!("http://127.0.0.1:{}", served.port),
    );
    let result = transcript(&reply, request.language.as_deref(), wav_duration, metadata);
    Ok(Reply::ok(&json!({
        "success": true,
        "message": "Transcription completed successfully",
        "result": result,
    })))
}

/// Builds the seed-1 `result` from the worker's `json` or `verbose_json` answer.
fn transcript(
    reply: &Value,
    requested_language: Option<&str>,
    wav_duration: Option<f64>,
    metadata: BTreeMap<String, String>,
) -> Value {
    let segments: Vec<Value> = reply
        .get("segments")
        .and_then(Value::as_array)
        .map(|segments| segments.iter().map(segment).collect())
        .unwrap_or_default();
    // The caller's code ("en") over the worker's name for it ("english"); the worker's answer
    // when the language was detected.
    let language = requested_language
        .filter(|l| !l.eq_ignore_ascii_case("auto"))
        .or_else(|| reply.get("language").and_then(Value::as_str));
    let duration = reply
        .get("duration")
        .and_then(Value::as_f64)
        .or(wav_duration);
    json!({
        "text": clean_text(reply.get("text").and_then(Value::as_str).unwrap_or("")),
        "language": language,
        "duration": duration,
        "confidence": confidence(&segments),
        "provider": "whisper-server",
        "segments": segments,
        "metadata": metadata,
    })
}

fn segment(raw: &Value) -> Value {
    let number = |key: &str| raw.get(key).and_then(Value::as_f64);
    json!({
        "start": number("start").unwrap_or(0.0),
        "end": number("end").unwrap_or(0.0),
        "text": clean_text(raw.get("text").and_then(Value::as_str).unwrap_or("")),
        "confidence": number("avg_logprob").map(logprob_to_confidence),
        "speaker": null,
    })
}

/// whisper's `avg_logprob` is the mean log-probability of a segment's tokens; its exponential
/// is the geometric-mean token probability, a 0..1 figure clients can show.
fn logprob_to_confidence(avg_logprob: f64) -> f64 {
    avg_logprob.exp().clamp(0.0, 1.0)
}

/// The transcript's confidence: segment confidences weighted by segment length, so a long
/// clear passage is not outvoted by a short mumble. `null` without segments (`timestamps:
/// false`), since the `json` format carries no probabilities.
fn confidence(segments: &[Value]) -> Option<f64> {
    let (weighted, total) = segments.iter().fold((0.0, 0.0), |(weighted, total), s| {
        let Some(c) = s["confidence"].as_f64() else {
            return (weighted, total);
        };
        let length =
            (s["end"].as_f64().unwrap_or(0.0) - s["start"].as_f64().unwrap_or(0.0)).max(0.01);
        (weighted + c * length, total + length)
    });
    (total > 0.0).then(|| (weighted / total * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbose_json_fills_segments_duration_and_confidence() {
        let reply = json!({
            "task": "transcribe", "language": "english", "duration": 11.0, "text": " And so my fellow Americans",
            "segments": [
                {"id": 0, "text": " And so", "start": 0.0, "end": 1.0, "avg_logprob": -0.1, "no_speech_prob": 0.0},
                {"id": 1, "text": " my fellow Americans", "start": 1.0, "end": 4.0, "avg_logprob": -0.3}
            ]
        });
        let result = transcript(&reply, None, None, BTreeMap::new());
        assert_eq!(result["text"], "And so my fellow Americans");
        assert_eq!(
            result["language"], "english",
            "the worker's, when none was asked for"
        );
        assert_eq!(
            transcript(&reply, Some("en"), None, BTreeMap::new())["language"],
            "en"
        );
        assert_eq!(result["duration"], 11.0);
        assert_eq!(result["segments"][1]["text"], "my fellow Americans");
        assert_eq!(result["segments"][0]["speaker"], Value::Null);
        let expected = ((-0.1f64).exp() * 1.0 + (-0.3f64).exp() * 3.0) / 4.0;
        assert!((result["confidence"].as_f64().unwrap() - expected).abs() < 0.001);
    }

    #[test]
    fn plain_json_has_no_segments_and_uses_the_request_language_and_wav_length() {
        let result = transcript(
            &json!({"text": " hi "}),
            Some("de"),
            Some(2.5),
            BTreeMap::new(),
        );
        assert_eq!(result["text"], "hi");
        assert_eq!(result["segments"], json!([]));
        assert_eq!(result["confidence"], Value::Null);
        assert_eq!(result["language"], "de");
        assert_eq!(result["duration"], 2.5);
        let auto = transcript(&json!({"text": ""}), Some("auto"), None, BTreeMap::new());
        assert_eq!(auto["language"], Value::Null);
    }

    #[test]
    fn confidence_is_clamped() {
        assert_eq!(logprob_to_confidence(0.5), 1.0);
        assert!(logprob_to_confidence(-50.0) >= 0.0);
    }
}
