//! The HTTP API: the route table, the handlers (one file per API family), and `Api`, the
//! `http::Handler` the server is handed. Handlers parse the request, call the engine, and
//! shape the reply; they never touch sockets or processes. Errors under `/v1/` take OpenAI's
//! shape, elsewhere the service's own (README "API").
//!
//! - `routes`: the table (method, path, public?, handler) and the matching.
//! - `status`: `GET /`, `GET /health`, `GET /livez`, `GET /readyz`, `GET /api/v1/providers`,
//!   `GET /api/v1/status`.
//! - `transcriptions`: `POST /api/v1/transcriptions` (base64 audio in JSON).
//! - `models`: `GET /api/models`, `POST /api/models/:id/load`, `POST /api/models/:id/unload`.
//! - `inference`: `POST /api/inference/:modelId`, `GET /api/inference/history`.
//! - `capacity`: `GET /api/capacity`.
//! - `rpc`: `POST /rpc` (JSON-RPC 2.0, the same dispatcher as rack mode).
//! - `openai`: `POST /v1/audio/transcriptions` (multipart) and `GET /v1/models`.
//! - `metrics`: `GET /metrics` (Prometheus).
//! - `page`: the browser page `GET /` serves to `Accept: text/html` (transcribe, pool);
//!   `sha256` the digests its Content-Security-Policy allows its inline script and style by.
//! - `openapi`: `GET /openapi` (HTML) and `GET /openapi/json` (the OpenAPI 3.1 document).

pub mod capacity;
pub mod inference;
pub mod metrics;
pub mod models;
pub mod openai;
pub mod openapi;
pub mod page;
pub mod routes;
pub mod rpc;
mod sha256;
pub mod status;
pub mod stream;
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
            Refusal::Busy => ApiError::CapacityExceeded {
                retry_after: std::time::Duration::from_secs(1),
                reason: "every request thread that may take work is busy".into(),
            },
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
        let level = if matches!(
            answered.label,
            "/health" | "/livez" | "/readyz" | "/metrics"
        ) {
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
            BodyError::Read(_) | BodyError::Truncated { .. } => {
                ApiError::InvalidRequest(e.to_string())
            }
        }
    }
}

/// Reads a JSON body into `T` as it arrives (a recording's base64 is tens of megabytes: it is
/// held once, in `T`, not also as raw bytes); a body that is not the expected JSON is a 400
/// saying why, and the body's limits (size, time) are reported as themselves.
fn json_body<T: serde::de::DeserializeOwned>(rq: &mut Incoming) -> Result<T, ApiError> {
    rq.with_body(|body| {
        serde_json::from_reader(std::io::BufReader::new(body)).map_err(|e| {
            ApiError::InvalidRequest(format!("the body is not the expected JSON: {e}"))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde_json::Value;
    use tiny_http::{Header, TestRequest};

    use crate::http::request::BodyLimits;
    use crate::pool::process::WorkerCommand;
    use crate::pool::{ModelSpec, Pool, PoolConfig};
    use crate::settings::Settings;

    /// The API over a pool whose monitor never runs: no worker ever starts, so every route
    /// shows what it does before any worker exists, without a socket or a process.
    fn api(api_keys: &[&str]) -> Api {
        let mut settings = Settings::default();
        settings.server.api_keys = api_keys.iter().map(|k| k.to_string()).collect();
        let (monitor, _) = std::sync::mpsc::channel();
        let config = PoolConfig {
            command: WorkerCommand {
                program: "/nonexistent/whisper-server".into(),
                cwd: None,
                args: Vec::new(),
                threads: None,
            },
            model: "default".into(),
            models: BTreeMap::from([(
                "default".to_string(),
                ModelSpec {
                    path: None,
                    pool_size: 1,
                    aliases: vec!["whisper-1".into()],
                    english_only: true,
                },
            )]),
            workers: settings.workers.clone(),
            max_concurrent: 1,
            max_queue: 1,
            queue_timeout: Duration::from_millis(10),
            model_cache_size: 1,
            log_dir: "/nonexistent/logs".into(),
            pid_dir: "/nonexistent/pids".into(),
        };
        let pool = Arc::new(Pool::new(config, monitor));
        Api::new(Arc::new(Engine::new(settings, pool, None, 1)))
    }

    /// Answers one request the way a request thread would, and parses a JSON body.
    fn call(
        api: &Api,
        method: Method,
        path: &str,
        body: &'static str,
        key: Option<&str>,
    ) -> (u16, Value) {
        let mut test = TestRequest::new()
            .with_method(method)
            .with_path(path)
            .with_body(body);
        if let Some(key) = key {
            let value = format!("Bearer {key}");
            test = test.with_header(Header::from_bytes("Authorization", value).unwrap());
        }
        let mut request: tiny_http::Request = test.into();
        let limits = BodyLimits {
            max_bytes: 1024,
            timeout: Duration::from_secs(5),
        };
        let reply = api.handle(&mut Incoming::new(&mut request, limits)).reply;
        let body = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
        (reply.status, body)
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        let api = api(&[]);
        let (status, body) = call(&api, Method::Get, "/nope", "", None);
        assert_eq!((status, body["code"].as_str()), (404, Some("NOT_FOUND")));
        let (status, body) = call(&api, Method::Delete, "/health", "", None);
        assert_eq!(
            (status, body["code"].as_str()),
            (405, Some("METHOD_NOT_ALLOWED"))
        );
        assert_eq!(call(&api, Method::Options, "/anything", "", None).0, 204);
    }

    #[test]
    fn keys_guard_every_route_but_the_public_ones() {
        let api = api(&["k1"]);
        let (status, body) = call(&api, Method::Get, "/api/v1/status", "", None);
        assert_eq!((status, body["code"].as_str()), (401, Some("UNAUTHORIZED")));
        let (status, body) = call(&api, Method::Get, "/api/v1/status", "", Some("k1"));
        assert_eq!((status, body["totalWorkers"].as_u64()), (200, Some(0)));
        let (status, body) = call(&api, Method::Get, "/v1/models", "", Some("wrong"));
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (401, Some("invalid_api_key"))
        );
        let (status, body) = call(&api, Method::Get, "/health", "", None);
        assert_eq!(
            (status, body["status"].as_str()),
            (503, Some("unhealthy")),
            "public, and not ready: no worker has started"
        );
    }

    #[test]
    fn bad_bodies_and_unknown_models_are_named() {
        let api = api(&[]);
        let (status, body) = call(&api, Method::Post, "/api/v1/transcriptions", "{nope", None);
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("INVALID_REQUEST"))
        );
        let (status, body) = call(&api, Method::Post, "/api/models/base/load", "", None);
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("MODEL_NOT_FOUND"))
        );
        let (status, body) = call(
            &api,
            Method::Post,
            "/api/inference/default",
            r#"{"inputData":""}"#,
            None,
        );
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("INVALID_REQUEST"))
        );
        let (status, body) = call(
            &api,
            Method::Post,
            "/api/v1/transcriptions",
            r#"{"content":"UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA="}"#,
            None,
        );
        assert_eq!(
            (status, body["code"].as_str()),
            (503, Some("NO_HEALTHY_WORKERS")),
            "valid audio, but no worker exists: {body}"
        );
    }

    #[test]
    fn an_english_only_model_cannot_translate_or_detect() {
        let api = api(&[]);
        let wav = r#"{"content":"UklGRiQAAABXQVZFZm10IBAAAAABAAEAgD4AAAB9AAACABAAZGF0YQAAAAA=","translate":true}"#;
        let (status, body) = call(&api, Method::Post, "/api/v1/transcriptions", wav, None);
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("English-only"),
            "{body}"
        );
        let (status, _) = call(&api, Method::Post, "/api/v1/languages/detect", wav, None);
        assert_eq!(status, 400);
    }

    #[test]
    fn openai_model_names_are_aliases() {
        let api = api(&[]);
        let (status, body) = call(&api, Method::Get, "/v1/models/whisper-1", "", None);
        assert_eq!((status, body["id"].as_str()), (200, Some("whisper-1")));
        let (status, body) = call(&api, Method::Get, "/v1/models/gpt-9", "", None);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("model_not_found"))
        );
        let (_, body) = call(&api, Method::Get, "/v1/models", "", None);
        let ids: Vec<&str> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        assert_eq!(ids, ["default", "whisper-1"]);
    }

    #[test]
    fn history_records_refused_runs() {
        let api = api(&[]);
        call(
            &api,
            Method::Post,
            "/api/inference/default",
            r#"{"inputData":"!!"}"#,
            None,
        );
        let (_, body) = call(&api, Method::Get, "/api/inference/history", "", None);
        assert_eq!(body["statistics"]["failedInferences"], 1);
        assert_eq!(body["history"][0]["error"], "INVALID_REQUEST");
    }

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
        let busy = api(&[]).refused(&Method::Post, "/api/v1/transcriptions", Refusal::Busy);
        let reply = busy.reply;
        assert_eq!(reply.status, 503);
        assert_eq!(reply.headers, [("Retry-After", "1".to_string())]);
    }
}
