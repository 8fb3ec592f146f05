//! The model manager: which configured models have workers (cold / loading / warm), loading
//! with LRU eviction bounded by `modelCacheSize`, and unloading by draining.
//!
//! Model ids are only ever looked up in the settings' `models` map (plus the default model),
//! so no client string becomes a path or an argument.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::error::ApiError;
use crate::pool::state::{ModelState, PoolState};
use crate::pool::Pool;

/// What `load` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    Now,
    Already,
}

/// What `unload` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unloaded {
    Now,
    NotLoaded,
}

pub struct ModelManager {
    /// Serializes loads and unloads: two loads racing for the last place in the cache would
    /// both evict, or both find room.
    changes: Mutex<()>,
    cache_size: usize,
    /// How long a load waits for its workers (`workers.startupTimeoutMs`).
    ready_timeout: Duration,
}

impl ModelManager {
    pub fn new(cache_size: usize, ready_timeout: Duration) -> ModelManager {
        ModelManager {
            changes: Mutex::new(()),
            cache_size,
            ready_timeout,
        }
    }

    /// `/api/models`: every model the pool may run.
    pub fn list(&self, pool: &Pool) -> Vec<Value> {
        let state = pool.lock();
        pool.config
            .models
            .iter()
            .map(|(id, spec)| {
                let workers = state
                    .workers
                    .iter()
                    .filter(|w| &w.model == id && w.is_primary())
                    .count();
                let last_used = state
                    .models
                    .get(id)
                    .and_then(|m| m.last_used)
                    .map(crate::clock::rfc3339);
                json!({
                    "id": id,
                    "path": spec.path,
                    "state": state.model_state(id).as_str(),
                    "workers": workers,
                    "lastUsed": last_used,
                })
            })
            .collect()
    }

    /// Ids of the models that are warm now.
    pub fn warm(&self, pool: &Pool) -> Vec<String> {
        let state = pool.lock();
        pool.config
            .models
            .keys()
            .filter(|id| state.model_state(id) == ModelState::Warm)
            .cloned()
            .collect()
    }

    /// Starts `id`'s workers and returns once they are healthy, evicting the least recently
    /// used warm model (never the default one) when the cache is full.
    pub fn load(&self, pool: &Pool, id: &str) -> Result<Loaded, ApiError> {
        let spec = pool
            .config
            .models
            .get(id)
            .ok_or_else(|| ApiError::ModelNotFound(id.chars().take(100).collect()))?;
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut state = pool.lock();
            if state.model_state(id) == ModelState::Warm {
                return Ok(Loaded::Already);
            }
            if state.active_slots(id) == 0 {
                self.make_room(pool, &mut state, id)?;
                state.activate(id, spec.pool_size, Instant::now());
            }
            state.models.entry(id.to_string()).or_default().loading = true;
        }
        log::info!("loading model {id} ({} worker(s))", spec.pool_size);
        pool.wake_monitor();
        let wanted = spec.pool_size;
        let all_ready = pool.wait_until(self.ready_timeout, |s| {
            (s.healthy_of(id) >= wanted).then_some(())
        });
        let mut state = pool.lock();
        state.models.entry(id.to_string()).or_default().loading = false;
        match (all_ready, state.healthy_of(id)) {
            (Some(()), _) => Ok(Loaded::Now),
            (None, healthy) if healthy > 0 => {
                log::warn!("model {id}: only {healthy} of {wanted} workers ready after {:?}; serving with those", self.ready_timeout);
                Ok(Loaded::Now)
            }
            (None, _) => {
                state.deactivate(id, Instant::now());
                drop(state);
                pool.notify_changed();
                Err(ApiError::Timeout(format!(
                    "model {id} had no healthy worker within workers.startupTimeoutMs ({} ms); see its worker logs",
                    self.ready_timeout.as_millis()
                )))
            }
        }
    }

    /// Evicts least recently used warm models until `id` fits in `modelCacheSize`.
    fn make_room(&self, pool: &Pool, state: &mut PoolState, id: &str) -> Result<(), ApiError> {
        loop {
            let loaded: Vec<(&String, Option<SystemTime>)> = pool
                .config
                .models
                .keys()
                .filter(|m| *m != id && state.active_slots(m) > 0)
                .map(|m| (m, state.models.get(m).and_then(|e| e.last_used)))
                .collect();
            if loaded.len() < self.cache_size {
                return Ok(());
            }
            // Never used sorts first (None < Some), then oldest use.
            let victim = loaded
                .iter()
                .filter(|(m, _)| **m != pool.config.model)
                .min_by_key(|(_, used)| *used);
            let Some((victim, _)) = victim else {
                return Err(ApiError::CapacityExceeded {
                    retry_after: Duration::from_secs(1),
                    reason: format!(
                        "inference.modelCacheSize ({}) is full and only the default model could be evicted",
                        self.cache_size
                    ),
                });
            };
            let victim = victim.to_string();
            log::info!("evicting model {victim} (least recently used) to load {id}");
            state.deactivate(&victim, Instant::now());
        }
    }

    /// Drains and stops `id`'s workers; each finishes its in-flight request first. The
    /// default model stays: eviction spares it, and so does an explicit unload.
    pub fn unload(&self, pool: &Pool, id: &str) -> Result<Unloaded, ApiError> {
        if !pool.config.models.contains_key(id) {
            return Err(ApiError::ModelNotFound(id.chars().take(100).collect()));
        }
        if id == pool.config.model {
            return Err(ApiError::InvalidRequest(format!(
                "`{id}` is the default model, which /api/v1/transcriptions serves; it cannot be unloaded \
                 (set defaultModel to another model to change it)"
            )));
        }
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut state = pool.lock();
        if state.active_slots(id) == 0 {
            return Ok(Unloaded::NotLoaded);
        }
        state.deactivate(id, Instant::now());
        drop(state);
        log::info!("unloading model {id}");
        pool.notify_changed();
        pool.wake_monitor();
        Ok(Unloaded::Now)
    }

    /// A request for `id` may go ahead: the model has workers (warm or on their way), or it
    /// is cold and `autoLoad` loads it now. Otherwise 409.
    pub fn ensure_available(&self, pool: &Pool, id: &str, auto_load: bool) -> Result<(), ApiError> {
        if !pool.config.models.contains_key(id) {
            return Err(ApiError::ModelNotFound(id.chars().take(100).collect()));
        }
        if pool.lock().active_slots(id) > 0 {
            return Ok(());
        }
        if auto_load {
            self.load(pool, id).map(|_| ())
        } else {
            Err(ApiError::ModelNotLoaded(id.to_string()))
        }
    }
}
