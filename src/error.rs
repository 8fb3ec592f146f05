//! The one error type every route returns, and its mapping to an HTTP status and the JSON
//! error body of the README's "API" section: `{"success": false, "code": "...", "error": "..."}`.
//!
//! Code below the API layer returns these variants; nothing else in the crate builds an error
//! response, so the status codes and `code` strings live in this file only.

use std::fmt;
use std::time::Duration;

/// What went wrong with one request, as the client will be told.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ApiError {
    /// Bad JSON, a missing field, bad base64, a body that is not audio. 400.
    InvalidRequest(String),
    /// A named field with a bad value (OpenAI clients are told its name as `param`). 400.
    InvalidField { field: &'static str, why: String },
    /// `apiKeys` is set and the request carries no valid `Authorization: Bearer` key. 401.
    Unauthorized,
    /// No route for this path. 404.
    NotFound(String),
    /// The path exists but not for this method. 405 with `Allow`.
    MethodNotAllowed { allow: String },
    /// A model id that is not a key of the `models` settings. 404.
    ModelNotFound(String),
    /// A configured model that has no warm workers. 409.
    ModelNotLoaded(String),
    /// The body is larger than `server.maxBodyBytes`. 413.
    PayloadTooLarge { limit: u64 },
    /// The audio is longer than `audio.maxSeconds`. 413, before any inference.
    AudioTooLong { seconds: f64, limit: u64 },
    /// A format the manager cannot decode without ffmpeg (which is off or missing). 415.
    UnsupportedMediaType(String),
    /// The client stopped sending its body before `server.requestTimeoutMs`. 408.
    BodyTimeout,
    /// No worker is healthy or starting. 503 with `Retry-After`.
    NoHealthyWorkers { retry_after: Duration },
    /// Every worker is busy and the queue is full or the wait ran out. 503 with `Retry-After`.
    CapacityExceeded {
        retry_after: Duration,
        reason: String,
    },
    /// The worker did not answer within the deadline. 504.
    Timeout(String),
    /// The worker failed in a way that is not the client's fault. 502.
    WorkerError(String),
    /// The worker rejected the audio (its 4xx). 422.
    WorkerRejected(String),
    /// A bug: a handler panicked or an invariant broke. 500.
    Internal(String),
    /// The client left a streamed transcription; its remaining chunks are not run. Never
    /// sent (nobody is there to read it); the history records it. 499, nginx's number for it.
    ClientGone,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidRequest(_) | ApiError::InvalidField { .. } => 400,
            ApiError::Unauthorized => 401,
            ApiError::NotFound(_) | ApiError::ModelNotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::BodyTimeout => 408,
            ApiError::ModelNotLoaded(_) => 409,
            ApiError::PayloadTooLarge { .. } | ApiError::AudioTooLong { .. } => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::WorkerRejected(_) => 422,
            ApiError::Internal(_) => 500,
            ApiError::WorkerError(_) => 502,
            ApiError::NoHealthyWorkers { .. } | ApiError::CapacityExceeded { .. } => 503,
            ApiError::Timeout(_) => 504,
            ApiError::ClientGone => 499,
        }
    }

    /// The machine-readable `code` field.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_)
            | ApiError::InvalidField { .. }
            | ApiError::WorkerRejected(_) => "INVALID_REQUEST",
            ApiError::Unauthorized => "UNAUTHORIZED",
            ApiError::NotFound(_) => "NOT_FOUND",
            ApiError::MethodNotAllowed { .. } => "METHOD_NOT_ALLOWED",
            ApiError::ModelNotFound(_) => "MODEL_NOT_FOUND",
            ApiError::ModelNotLoaded(_) => "MODEL_NOT_LOADED",
            ApiError::PayloadTooLarge { .. } => "PAYLOAD_TOO_LARGE",
            ApiError::AudioTooLong { .. } => "AUDIO_TOO_LONG",
            ApiError::UnsupportedMediaType(_) => "UNSUPPORTED_MEDIA_TYPE",
            ApiError::BodyTimeout => "TIMEOUT",
            ApiError::NoHealthyWorkers { .. } => "NO_HEALTHY_WORKERS",
            ApiError::CapacityExceeded { .. } => "CAPACITY_EXCEEDED",
            ApiError::Timeout(_) => "TIMEOUT",
            ApiError::WorkerError(_) => "WORKER_ERROR",
            ApiError::Internal(_) => "INTERNAL",
            ApiError::ClientGone => "CLIENT_CLOSED_REQUEST",
        }
    }

    /// Seconds for the `Retry-After` header, on the 503s.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::NoHealthyWorkers { retry_after }
            | ApiError::CapacityExceeded { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            _ => None,
        }
    }

    /// The JSON error body (README "API").
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "success": false, "code": self.code(), "error": self.to_string() })
    }

    /// The same error in OpenAI's shape, for the `/v1/*` routes, so their SDKs raise the
    /// matching exception: `{"error": {"message", "type", "param", "code"}}`.
    pub fn openai_body(&self) -> serde_json::Value {
        let (kind, code) = match self {
            ApiError::Unauthorized => ("authentication_error", "invalid_api_key".to_string()),
            e if e.status() >= 500 => ("server_error", e.code().to_ascii_lowercase()),
            e => ("invalid_request_error", e.code().to_ascii_lowercase()),
        };
        let param = match self {
            ApiError::InvalidField { field, .. } => Some(*field),
            ApiError::ModelNotFound(_) | ApiError::ModelNotLoaded(_) => Some("model"),
            _ => None,
        };
        let message = match self {
            // OpenAI's own wording, which clients may match on.
            ApiError::PayloadTooLarge { limit } => {
                format!("Maximum content size limit ({limit}) exceeded")
            }
            other => other.to_string(),
        };
        serde_json::json!({ "error": { "message": message, "type": kind, "param": param, "code": code } })
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::InvalidRequest(why) => write!(f, "Invalid request: {why}"),
            ApiError::InvalidField { field, why } => write!(f, "Invalid `{field}`: {why}"),
            ApiError::Unauthorized => {
                f.write_str("Missing or invalid API key: send `Authorization: Bearer <key>`")
            }
            ApiError::NotFound(what) => write!(f, "Not found: {what}"),
            ApiError::MethodNotAllowed { allow } => {
                write!(f, "Method not allowed here; allowed: {allow}")
            }
            ApiError::ModelNotFound(id) => write!(
                f,
                "Model `{id}` is not configured (see `models` in the settings)"
            ),
            ApiError::ModelNotLoaded(id) => write!(f, "Model `{id}` is not loaded"),
            ApiError::PayloadTooLarge { limit } => {
                write!(
                    f,
                    "Request body is larger than the limit of {limit} bytes (server.maxBodyBytes)"
                )
            }
            ApiError::BodyTimeout => {
                f.write_str("The request body did not arrive within server.requestTimeoutMs")
            }
            ApiError::AudioTooLong { seconds, limit } => write!(
                f,
                "The audio lasts more than {limit} s (audio.maxSeconds): {seconds:.0} s or more"
            ),
            ApiError::UnsupportedMediaType(why) => write!(f, "Unsupported audio format: {why}"),
            ApiError::NoHealthyWorkers { .. } => {
                f.write_str("No healthy whisper-server worker is available; retry shortly")
            }
            ApiError::CapacityExceeded { reason, .. } => {
                write!(f, "Server at capacity: {reason}; retry shortly")
            }
            ApiError::Timeout(what) => write!(f, "Timed out: {what}"),
            ApiError::WorkerError(what) => write!(f, "Worker error: {what}"),
            ApiError::WorkerRejected(what) => write!(f, "The worker rejected the audio: {what}"),
            ApiError::Internal(what) => write!(f, "Internal error: {what}"),
            ApiError::ClientGone => f.write_str(
                "The client left before the transcript was complete; the chunks not yet begun were not run",
            ),
        }
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_keeps_the_seed_error_field() {
        let body = ApiError::InvalidRequest("missing field `content`".into()).body();
        assert_eq!(body["success"], false);
        assert_eq!(body["code"], "INVALID_REQUEST");
        assert!(body["error"].as_str().unwrap().contains("content"));
    }

    #[test]
    fn openai_shape_names_type_param_and_code() {
        let too_large = ApiError::PayloadTooLarge { limit: 10 }.openai_body();
        assert_eq!(
            too_large["error"]["message"],
            "Maximum content size limit (10) exceeded"
        );
        let body = ApiError::ModelNotFound("gpt-9".into()).openai_body();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["param"], "model");
        assert_eq!(body["error"]["code"], "model_not_found");
        let field = ApiError::InvalidField {
            field: "temperature",
            why: "not a number".into(),
        }
        .openai_body();
        assert_eq!(field["error"]["param"], "temperature");
        assert_eq!(
            ApiError::Unauthorized.openai_body()["error"]["code"],
            "invalid_api_key"
        );
        let busy = ApiError::NoHealthyWorkers {
            retry_after: Duration::from_secs(1),
        }
        .openai_body();
        assert_eq!(
            (
                busy["error"]["type"].as_str(),
                busy["error"]["param"].as_str()
            ),
            (Some("server_error"), None)
        );
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let e = ApiError::CapacityExceeded {
            retry_after: Duration::from_millis(1500),
            reason: "queue full".into(),
        };
        assert_eq!(e.status(), 503);
        assert_eq!(e.retry_after_secs(), Some(2));
        assert_eq!(ApiError::Timeout("x".into()).retry_after_secs(), None);
    }
}
