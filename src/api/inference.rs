//! `POST /api/inference/:modelId` and `GET /api/inference/history` (SPEC section 6, seed 2).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::engine::inference::{self, Job};
use crate::error::ApiError;
use crate::http::request::Incoming;
use crate::http::response::Reply;

/// Shortest `options.timeout`: no worker answers faster, so a smaller one can only fail.
const MIN_TIMEOUT_MS: u64 = 100;

/// History entries returned when `limit` is not given.
const DEFAULT_HISTORY_LIMIT: usize = 50;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InferenceRequest {
    input_data: String,
    #[serde(default)]
    options: Options,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Options {
    /// Milliseconds for the whole run; `inference.inferenceTimeoutMs` when absent.
    timeout: Option<u64>,
    language: Option<String>,
    timestamps: Option<bool>,
    /// `json` (text only) or `verbose_json` (segments too).
    response_format: Option<String>,
}

pub fn run(app: &App, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let body = rq.body()?;
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not JSON: {e}")))?;
    drop(body);
    Ok(Reply::ok(&run_body(app, rq.param(0), request)?))
}

/// One inference on `model_id` from a `{inputData, options}` object (the body of the HTTP
/// route and the params of `runInference`).
pub fn run_body(app: &App, model_id: &str, request: Value) -> Result<Value, ApiError> {
    let request: InferenceRequest = serde_json::from_value(request)
        .map_err(|e| ApiError::InvalidRequest(format!("expected {{inputData, options?}}: {e}")))?;
    let model = super::resolve_model(app, Some(model_id))?;
    let options = request.options;
    let timestamps = match options.response_format.as_deref() {
        None | Some("json") => options.timestamps.unwrap_or(false),
        Some("verbose_json") => true,
        Some(other) => {
            return Err(ApiError::InvalidField {
                field: "options.responseFormat",
                why: format!("`{other:.20}` is not json or verbose_json"),
            })
        }
    };
    let timeout = match options.timeout {
        Some(ms) if ms < MIN_TIMEOUT_MS => {
            return Err(ApiError::InvalidField {
                field: "options.timeout",
                why: format!("must be at least {MIN_TIMEOUT_MS} ms"),
            })
        }
        Some(ms) => ms,
        None => app.settings.inference.inference_timeout_ms,
    };
    let job = Job {
        model,
        content: &request.input_data,
        language: options.language,
        timestamps,
        deadline: Instant::now() + Duration::from_millis(timeout),
    };
    let outcome = inference::run(app, &job)?;
    let t = &outcome.transcript;
    Ok(json!({
        "success": true,
        "modelId": model,
        "timestamp": outcome.timestamp,
        "result": {
            "inferenceId": outcome.inference_id,
            "modelId": model,
            "processingTime": outcome.processing_time,
            "timestamp": outcome.timestamp,
            "result": { "text": t.text, "segments": t.segments, "language": t.language, "duration": t.duration },
        },
    }))
}

pub fn history(app: &App, rq: &mut Incoming) -> Result<Reply, ApiError> {
    let limit = match rq.query_param("limit") {
        None => DEFAULT_HISTORY_LIMIT,
        Some(raw) => raw.parse().map_err(|_| ApiError::InvalidField {
            field: "limit",
            why: format!("`{raw:.20}` is not a whole number"),
        })?,
    };
    let (statistics, entries) = app.history.snapshot(limit);
    Ok(Reply::ok(
        &json!({ "success": true, "statistics": statistics, "history": entries }),
    ))
}
