//! The model manager: which configured models have workers (cold / loading / warm), loading
//! with LRU eviction bounded by `inference.modelCacheSize`, and unloading by draining.
//!
//! Each decision is taken under the pool lock and the wait for workers happens without it, so
//! loads of different models proceed in parallel and an unload never waits for a load. Model
//! ids are only ever looked up in the settings' `models` map (plus the default model), so no
//! client string becomes a path or an argument.

use std::time::{Instant, SystemTime};

use super::state::ModelState;
use super::Pool;
use crate::error::ApiError;

/// What `load_model` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Now,
    Already,
}

/// What `unload_model` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unloaded {
    Now,
    NotLoaded,
}

/// One configured model as `/api/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelView {
    pub id: String,
    /// Its `-m` path, when the manager adds one.
    pub path: Option<String>,
    pub state: ModelState,
    pub workers: usize,
    pub last_used: Option<SystemTime>,
}

impl Pool {
    /// The configured id that `name` is or is an alias of (so callers hold the settings'
    /// string, not the client's), or 404.
    pub fn known_model(&self, name: &str) -> Result<&str, ApiError> {
        self.config
            .models
            .iter()
            .find(|(id, spec)| *id == name || spec.aliases.iter().any(|a| a == name))
            .map(|(id, _)| id.as_str())
            .ok_or_else(|| ApiError::ModelNotFound(name.chars().take(100).collect()))
    }

    /// Every model the pool may run.
    pub fn model_views(&self) -> Vec<ModelView> {
        let state = self.lock();
        self.config
            .models
            .iter()
            .map(|(id, spec)| {
                let status = state.model_status(id);
                ModelView {
                    id: id.clone(),
                    path: spec.path.clone(),
                    state: status.state,
                    workers: status.workers,
                    last_used: status.last_used,
                }
            })
            .collect()
    }

    /// Ids of the models that are warm now.
    pub fn warm_models(&self) -> Vec<String> {
        let state = self.lock();
        self.config
            .models
            .keys()
            .filter(|id| state.model_state(id) == ModelState::Warm)
            .cloned()
            .collect()
    }

    /// Whether `id` has a healthy worker now.
    pub fn is_warm(&self, id: &str) -> bool {
        self.lock().model_state(id) == ModelState::Warm
    }

    /// Starts `id`'s workers and returns once they are healthy (or `workers.startupTimeoutMs`
    /// passes), evicting the least recently used warm model (never the default one) when the
    /// cache is full.
    pub fn load_model(&self, id: &str) -> Result<Loaded, ApiError> {
        let id = self.known_model(id)?;
        let spec = &self.config.models[id];
        let evicted = {
            let mut state = self.lock();
            if state.model_state(id) == ModelState::Warm {
                return Ok(Loaded::Already);
            }
            state.begin_load(
                id,
                spec.pool_size,
                self.config.model_cache_size,
                Instant::now(),
            )?
        };
        for victim in evicted {
            log::info!("evicting model {victim} (least recently used) to load {id}");
        }
        log::info!("loading model {id} ({} worker(s))", spec.pool_size);
        self.notify_changed();
        self.wake_monitor();
        let wanted = spec.pool_size;
        let timeout = self.config.workers.startup_timeout();
        let all_ready = self.wait_until(timeout, |s| (s.healthy_of(id) >= wanted).then_some(()));
        let healthy = self.lock().end_load(id, Instant::now());
        self.notify_changed();
        match (all_ready, healthy) {
            (Some(()), _) => Ok(Loaded::Now),
            (None, healthy) if healthy > 0 => {
                log::warn!(
                    "model {id}: only {healthy} of {wanted} workers ready after {} ms; serving with those",
                    timeout.as_millis()
                );
                Ok(Loaded::Now)
            }
            (None, _) => {
                self.wake_monitor();
                Err(ApiError::Timeout(format!(
                    "model {id} had no healthy worker within workers.startupTimeoutMs ({} ms); see its worker logs",
                    timeout.as_millis()
                )))
            }
        }
    }

    /// Drains and stops `id`'s workers; each finishes its in-flight request first. The
    /// default model stays: eviction spares it, and so does an explicit unload.
    pub fn unload_model(&self, id: &str) -> Result<Unloaded, ApiError> {
        let id = self.known_model(id)?;
        if id == self.config.model {
            return Err(ApiError::InvalidRequest(format!(
                "`{id}` is the default model, which /api/v1/transcriptions serves; it cannot be unloaded \
                 (set defaultModel to another model to change it)"
            )));
        }
        {
            let mut state = self.lock();
            if state.active_slots(id) == 0 {
                return Ok(Unloaded::NotLoaded);
            }
            state.deactivate(id, Instant::now());
        }
        log::info!("unloading model {id}");
        self.notify_changed();
        self.wake_monitor();
        Ok(Unloaded::Now)
    }

    /// The model a request runs on: absent or empty means the default model; any other id
    /// must be configured (404 otherwise) and have workers (409 otherwise, unless `auto_load`
    /// loads it now). Returns the configured id.
    pub fn resolve_model(
        &self,
        requested: Option<&str>,
        auto_load: bool,
    ) -> Result<&str, ApiError> {
        let id = match requested {
            None | Some("") => return Ok(self.config.model.as_str()),
            Some(id) => self.known_model(id)?,
        };
        if self.lock().active_slots(id) > 0 {
            return Ok(id);
        }
        if auto_load {
            self.load_model(id).map(|_| id)
        } else {
            Err(ApiError::ModelNotLoaded(id.to_string()))
        }
    }
}
