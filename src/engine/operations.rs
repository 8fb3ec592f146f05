//! The operations both transports offer, each returning the JSON body that the HTTP route
//! answers with and the JSON-RPC method returns as its `result` (README "JSON-RPC and rack
//! mode": results are the HTTP bodies of the matching routes).

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};

use super::inference::{Budget, Input, Job, Options};
use super::transcript::Transcript;
use super::Engine;
use crate::error::ApiError;
use crate::pool::models::{Loaded, Unloaded};
use crate::pool::state::{ModelState, Snapshot};

/// The service's name in `/health` and `/`.
pub const SERVICE_NAME: &str = "inference-server-manager";

/// Shortest `options.timeout`: no worker answers faster, so a smaller one can only fail.
const MIN_TIMEOUT_MS: u64 = 100;

/// Longest `options.timeout` unless `inference.inferenceTimeoutMs` is longer: a longer one
/// replaces the server's deadline, which is what frees a hung worker (whisper-server can hang
/// with `/health` fine), so no client may put it off for days.
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// The body of `POST /api/inference/:modelId` and the params of `runInference`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InferenceRequest {
    input_data: String,
    #[serde(default)]
    options: InferenceOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct InferenceOptions {
    /// Milliseconds for the whole run; `inference.inferenceTimeoutMs` when absent.
    timeout: Option<u64>,
    language: Option<String>,
    timestamps: Option<bool>,
    /// `json` (text only) or `verbose_json` (segments too).
    response_format: Option<String>,
}

/// `GET /health`'s verdict: `serving` is false when no worker is healthy (HTTP 503).
pub struct Health {
    pub serving: bool,
    pub body: Value,
}

/// Segments as the seed APIs show them: times in seconds, the text, its confidence.
pub fn seed_segments(t: &Transcript) -> Vec<Value> {
    t.segments
        .iter()
        .map(|s| json!({ "start": s.start, "end": s.end, "text": s.text(), "confidence": s.confidence() }))
        .collect()
}

impl InferenceRequest {
    /// Reads `{inputData, options?}` from a JSON value (RPC params, or a parsed HTTP body).
    pub fn from_value(value: Value) -> Result<InferenceRequest, ApiError> {
        serde_json::from_value(value)
            .map_err(|e| ApiError::InvalidRequest(format!("expected {{inputData, options?}}: {e}")))
    }
}

impl Engine {
    /// One inference on `model_id` (`/api/inference/:modelId`, `runInference`).
    pub fn run_inference(
        &self,
        model_id: &str,
        request: InferenceRequest,
    ) -> Result<Value, ApiError> {
        let model = self.resolve_model(Some(model_id))?;
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
        let server_timeout = self.settings.inference.inference_timeout();
        let client_timeout = match options.timeout {
            Some(ms) if ms < MIN_TIMEOUT_MS => {
                return Err(ApiError::InvalidField {
                    field: "options.timeout",
                    why: format!("must be at least {MIN_TIMEOUT_MS} ms"),
                })
            }
            Some(ms) if ms > max_timeout_ms(server_timeout) => {
                return Err(ApiError::InvalidField {
                    field: "options.timeout",
                    why: format!(
                        "must be at most {} ms, the longer of an hour and inference.inferenceTimeoutMs",
                        max_timeout_ms(server_timeout)
                    ),
                })
            }
            Some(ms) => Some(Duration::from_millis(ms)),
            None => None,
        };
        let now = Instant::now();
        let job = Job {
            model,
            input: Input::Base64(request.input_data),
            options: Options::checked(options.language.as_deref(), None, None, false)?,
            budget: Budget::Whole {
                server: now + client_timeout.map_or(server_timeout, |c| c.max(server_timeout)),
                client: client_timeout
                    .filter(|c| *c < server_timeout)
                    .map(|c| now + c),
            },
        };
        let outcome = self.transcribe(job)?;
        let t = &outcome.result;
        Ok(json!({
            "success": true,
            "modelId": model,
            "timestamp": outcome.timestamp,
            "result": {
                "inferenceId": outcome.inference_id,
                "modelId": model,
                "processingTime": outcome.processing_time,
                "timestamp": outcome.timestamp,
                "result": {
                    "text": t.text,
                    "segments": if timestamps { seed_segments(t) } else { Vec::new() },
                    "language": t.language,
                    "duration": t.duration,
                },
            },
        }))
    }

    /// Loads a model; returns once its workers are healthy.
    pub fn load_model(&self, id: &str) -> Result<Value, ApiError> {
        let message = match self.pool.load_model(id)? {
            Loaded::Now => "Model loaded successfully",
            Loaded::Already => "Model already loaded",
        };
        Ok(json!({ "success": true, "message": message }))
    }

    pub fn unload_model(&self, id: &str) -> Result<Value, ApiError> {
        let message = match self.pool.unload_model(id)? {
            Unloaded::Now => "Model unloaded successfully",
            Unloaded::NotLoaded => "Model not loaded",
        };
        Ok(json!({ "success": true, "message": message }))
    }

    /// The warm models (`getAvailableModels`).
    pub fn available_models(&self) -> Value {
        json!({ "success": true, "models": self.pool.warm_models() })
    }

    /// How much more work the pool can take now. `available` is true when an inference could
    /// start or wait in the queue: the cap of `maxConcurrentInferences` is not reached or the
    /// queue has room, and a worker (of `model`, when one is named) is healthy.
    pub fn capacity(&self, model: Option<&str>) -> Result<Value, ApiError> {
        if let Some(id) = model {
            self.pool.known_model(id)?;
        }
        let warm = self.pool.warm_models();
        let snapshot = self.pool.snapshot();
        let inference = &self.settings.inference;
        let room = snapshot.in_flight < inference.max_concurrent_inferences
            || snapshot.queue_depth < inference.max_queue;
        let ready = match model {
            Some(id) => warm.iter().any(|w| w == id),
            None => snapshot.healthy > 0,
        };
        Ok(json!({
            "maxConcurrent": inference.max_concurrent_inferences,
            "currentLoad": snapshot.in_flight,
            "available": room && ready,
            "queueDepth": snapshot.queue_depth,
            "availableModels": warm,
        }))
    }

    /// `healthy`, `degraded` (fewer than half of the default model's pool healthy) or
    /// `unhealthy` (none: not serving `/api/v1/transcriptions`). Readiness is about the default
    /// model; the other models with workers are reported apart, under `models`.
    pub fn health(&self) -> Result<Health, ApiError> {
        let snapshot = self.pool.snapshot();
        let default = self.pool.config.model.as_str();
        let pool_size = self
            .pool
            .config
            .models
            .get(default)
            .map_or(self.settings.workers.pool_size, |m| m.pool_size);
        let (healthy, total) = worker_counts(&snapshot, default);
        let status = match healthy {
            0 => "unhealthy",
            n if n * 2 < pool_size => "degraded",
            _ => "healthy",
        };
        let models: serde_json::Map<String, Value> = self
            .pool
            .model_views()
            .into_iter()
            .filter(|m| m.id != default && m.state != ModelState::Cold)
            .map(|m| {
                let (healthy, total) = worker_counts(&snapshot, &m.id);
                let entry = json!({ "state": m.state.as_str(), "healthyWorkers": healthy, "totalWorkers": total });
                (m.id, entry)
            })
            .collect();
        let body = json!({
            "success": true,
            "status": status,
            "service": SERVICE_NAME,
            "timestamp": crate::clock::now_rfc3339(),
            "uptime": self.pool.started_at.elapsed().as_secs(),
            "pool": { "healthyWorkers": healthy, "totalWorkers": total },
            "models": models,
            "capacity": self.capacity(None)?,
        });
        Ok(Health {
            serving: healthy > 0,
            body,
        })
    }

    /// Readiness in Kubernetes' sense (`/readyz`): a worker of the default model can take a
    /// request now (healthy and accepting).
    pub fn readiness(&self) -> Health {
        let default = self.pool.config.model.as_str();
        let ready = self
            .pool
            .snapshot()
            .workers
            .iter()
            .filter(|w| w.model == default && w.accepting_requests)
            .count();
        Health {
            serving: ready > 0,
            body: json!({
                "status": if ready > 0 { "ready" } else { "not ready" },
                "model": default,
                "healthyWorkers": ready,
            }),
        }
    }
}

/// Healthy workers of `model`, and those alive (not stopped).
fn worker_counts(snapshot: &Snapshot, model: &str) -> (usize, usize) {
    let of_model = || snapshot.workers.iter().filter(move |w| w.model == model);
    (
        of_model().filter(|w| w.state == "healthy").count(),
        of_model().filter(|w| w.state != "stopped").count(),
    )
}

/// The longest `options.timeout` a request may give (`MAX_TIMEOUT_MS`).
fn max_timeout_ms(server_timeout: Duration) -> u64 {
    MAX_TIMEOUT_MS.max(u64::try_from(server_timeout.as_millis()).unwrap_or(u64::MAX))
}
