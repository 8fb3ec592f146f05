//! The HTTP API: the route table, the handlers (one file per API family), and `Api`, the
//! `http::Handler` the server is handed. Handlers parse the request, call the engine, and
//! shape the reply; they never touch sockets or processes. Errors under `/v1/` take OpenAI's
//! shape, elsewhere the service's own (README "API").
//!
//! - `routes`: the table (method, path, public?, handler) and the matching.
//! - `status`: `GET /`, `GET /health`, `GET /api/v1/providers`, `GET /api/v1/status`.
//! - `transcriptions`: `POST /api/v1/transcriptions` (base64 audio in JSON).
//! - `models`: `GET /api/models`, `POST /api/models/:id/load`, `POST /api/models/:id/unload`.
//! - `inference`: `POST /api/inference/:modelId`, `GET /api/inference/history`.
//! - `capacity`: `GET /api/capacity`.
//! - `rpc`: `POST /rpc` (JSON-RPC 2.0, the same dispatcher as rack mode).
//! - `openai`: `POST /v1/audio/transcriptions` (multipart) and `GET /v1/models`.
//! - `metrics`: `GET /metrics` (Prometheus).
//! - `openapi`: `GET /openapi` (HTML) and `GET /openapi/json` (the OpenAPI 3.1 document).

pub mod capacity;
pub mod inference;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod openapi;
pub mod routes;
pub mod rpc;
pub mod status;
pub mod transcriptions;

use std::sync::Arc;

use tiny_http::Method;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Answered, BodyError, Handled, Handler, Incoming, Refusal, Reply};

/// The application as the HTTP server sees it: routing, the API-key check, error shapes, the
/// access log and request metrics.
pub struct Api {
    engine: Arc<Engine>,
}

impl Api {
    pub fn new(engine: Arc<Engine>) -> Api {
        Api { engine }
    }
}

impl Handler for Api {
    fn handle(&self, request: &mut Incoming) -> Handled {
        if request.method == Method::Options {
            return Handled {
                reply: Reply::no_content(),
                label: routes::PREFLIGHT,
            };
        }
        let path = request.path.clone();
        let (route, params) = match routes::resolve(&request.method, &path) {
            Ok(found) => found,
            Err(e) => {
                return Handled {
                    reply: error_reply(&path, &e),
                    label: routes::UNMATCHED,
                }
            }
        };
        request.params = params;
        let reply = if !route.public && !self.engine.authorized(request.header("Authorization")) {
            error_reply(&path, &ApiError::Unauthorized)
        } else {
            (route.handler)(&self.engine, request).unwrap_or_else(|e| error_reply(&path, &e))
        };
        Handled {
            reply,
            label: route.path,
        }
    }

    fn refused(&self, method: &Method, path: &str, refusal: Refusal) -> Handled {
        let error = match refusal {
            Refusal::TooLarge { limit, .. } => ApiError::PayloadTooLarge { limit },
            Refusal::Panicked => ApiError::Internal(
                "the handler failed; the error is logged with this request id".into(),
            ),
        };
        Handled {
            reply: error_reply(path, &error),
            label: routes::label(method, path),
        }
    }

    fn answered(&self, answered: &Answered) {
        self.engine
            .metrics
            .record_request(answered.label, answered.status, answered.elapsed);
        // Probes and scrapes come every few seconds; they would drown the log at info.
        let level = if matches!(answered.label, "/health" | "/metrics") {
            log::Level::Debug
        } else {
            log::Level::Info
        };
        log::log!(
            level,
            "{} {} {} {}ms [{}]",
            answered.method,
            answered.path,
            answered.status,
            answered.elapsed.as_millis(),
            answered.request_id
        );
    }
}

/// An error in the shape its API family uses, with `Retry-After` on 503s and `Allow` on 405s.
pub fn error_reply(path: &str, error: &ApiError) -> Reply {
    let body = if path.starts_with("/v1/") {
        error.openai_body()
    } else {
        error.body()
    };
    let mut reply = Reply::json(error.status(), &body);
    if let Some(secs) = error.retry_after_secs() {
        reply = reply.with_header("Retry-After", secs.to_string());
    }
    if let ApiError::MethodNotAllowed { allow } = error {
        reply = reply.with_header("Allow", allow.clone());
    }
    reply
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            BodyError::Timeout => ApiError::BodyTimeout,
            BodyError::Busy => ApiError::CapacityExceeded {
                retry_after: std::time::Duration::from_secs(1),
                reason: e.to_string(),
            },
            BodyError::Read(_) | BodyError::Truncated { .. } => {
                ApiError::InvalidRequest(e.to_string())
            }
        }
    }
}

/// Reads a JSON body into `T`; a body that is not the expected JSON is a 400 saying why.
fn json_body<T: serde::de::DeserializeOwned>(rq: &mut Incoming) -> Result<T, ApiError> {
    let body = rq.body()?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::InvalidRequest(format!("the body is not the expected JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_errors_take_the_openai_shape() {
        let reply = error_reply("/v1/audio/transcriptions", &ApiError::Unauthorized);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_api_key");
        let reply = error_reply("/api/v1/transcriptions", &ApiError::Unauthorized);
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(body["code"], "UNAUTHORIZED");
    }

    #[test]
    fn busy_errors_say_when_to_retry() {
        let reply = error_reply("/api/v1/transcriptions", &ApiError::from(BodyError::Busy));
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers, [("Retry-After", "1".to_string())]);
    }
}
