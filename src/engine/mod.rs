//! The engine: what the service does, whatever transport asked. HTTP (`api`) and JSON-RPC
//! (`rpc`) parse their requests, call an operation here, and shape the answer; neither owns
//! the operations, and neither is known here.
//!
//! - `Engine`: the request context (settings, pool, history, metrics), built by `app`.
//! - `operations`: run an inference from `{inputData, options}`, load, unload, capacity,
//!   health, available models: the bodies `/api/...` routes and JSON-RPC methods share.
//! - `inference`: one transcription in stages: validate, preprocess, execute, postprocess,
//!   record. Every route that transcribes runs through it.
//! - `reply`: a worker's `verbose_json` answer, read leniently into the fields used.
//! - `transcript`: what a worker's `verbose_json` answer means, and every format derived from
//!   it (text, SRT, VTT, OpenAI's shapes).
//! - `languages`: whisper's language codes and names.
//! - `history`: the bounded ring of past runs and their statistics.

pub mod decode;
pub mod history;
pub mod inference;
pub mod languages;
pub mod operations;
pub mod progress;
pub mod reply;
pub mod transcript;

use std::sync::Arc;

use crate::audio::budget::Budget;
use crate::audio::ffmpeg::Ffmpeg;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::pool::Pool;
use crate::settings::Settings;
use history::History;

/// Everything an operation can reach. One per running service, shared by every request
/// thread behind an `Arc`; each part guards its own state.
pub struct Engine {
    pub settings: Settings,
    pub pool: Arc<Pool>,
    pub history: History,
    pub metrics: Metrics,
    /// The transcriptions running now, with their chunks done (`/api/v1/status`).
    pub progress: progress::Progress,
    /// What decodes uploads that are not WAV: `None` when `audio.ffmpeg` is `""` or names
    /// nothing usable (then the start-up log said why).
    pub ffmpeg: Option<Ffmpeg>,
    /// The decoded audio held at once (`audio.maxSecondsInMemory`).
    pub decoded: Budget,
    /// Seconds since the epoch when this run started: tells this run's request ids from
    /// earlier runs', and is the `created` of `/v1/models`.
    pub boot_id: u64,
}

impl Engine {
    pub fn new(
        settings: Settings,
        pool: Arc<Pool>,
        ffmpeg: Option<Ffmpeg>,
        boot_id: u64,
    ) -> Engine {
        Engine {
            history: History::new(settings.inference.history_size),
            metrics: Metrics::default(),
            progress: progress::Progress::default(),
            ffmpeg,
            decoded: Budget::new(settings.audio.max_seconds_in_memory),
            settings,
            pool,
            boot_id,
        }
    }

    /// Whether the raw `Authorization` header carries one of `server.apiKeys` (always, when
    /// none are set).
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        crate::auth::authorized(&self.settings.server.api_keys, authorization)
    }

    /// The model a request runs on: absent or empty means the default model; any other id
    /// must be configured (404) and loaded (409), unless `inference.autoLoad` loads it now.
    pub fn resolve_model(&self, requested: Option<&str>) -> Result<&str, ApiError> {
        self.pool
            .resolve_model(requested, self.settings.inference.auto_load)
    }
}
