//! The worker pool: shared state, the monitor that owns the processes, the dispatch that
//! lends workers to requests, and the model manager.
//!
//! `PoolState` sits behind one mutex that only this module takes: the rest of the service
//! sees `Pool`'s methods, each of which holds the lock for a moment and never across I/O.
//!
//! - `state`: `PoolState`, the bookkeeping and every transition of a worker; pure logic.
//! - `monitor`: the single thread that spawns, health-checks, rotates, reaps and stops.
//! - `dispatch`: a request's side: wait for an idle worker (bounded FIFO), call it, retry once.
//! - `models`: load (with LRU eviction) and unload of the configured models.
//! - `process`: spawning, signals, pid records, orphan reaping, port checks.
//! - `worker_log`: a worker's output, gathered and timestamped into its log file.
//! - `client`: the whisper-server HTTP protocol over `ureq`.
//! - `tcp`, `cork`: the socket under it, with fewer system calls and sends than ureq's own.

pub mod client;
mod cork;
pub mod dispatch;
pub mod models;
pub mod monitor;
pub mod process;
pub mod state;
mod tcp;
mod worker_log;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::settings::WorkerSettings;
use process::WorkerCommand;
use state::{Backoff, PoolState, Rules, Snapshot};

/// Everything the pool needs from the settings, resolved once at start.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub command: WorkerCommand,
    /// The model served by default (`defaultModel`, or `default` when `args` choose it);
    /// its workers start with the service.
    pub model: String,
    /// Every model the pool may run, the default one included.
    pub models: BTreeMap<String, ModelSpec>,
    pub workers: WorkerSettings,
    /// `inference.maxConcurrentInferences`: inferences at once across all models.
    pub max_concurrent: usize,
    pub max_queue: usize,
    pub queue_timeout: Duration,
    /// `inference.modelCacheSize`: models with workers at once.
    pub model_cache_size: usize,
    pub log_dir: PathBuf,
    pub pid_dir: PathBuf,
}

impl PoolConfig {
    /// Workers of the default model: its own `poolSize` under `models`, else `workers.poolSize`.
    pub fn default_pool_size(&self) -> usize {
        self.models
            .get(&self.model)
            .map_or(self.workers.pool_size, |m| m.pool_size)
    }
}

/// How to run one model's workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// `-m` path, when the manager adds one (not when `whisperServer.args` choose the model).
    pub path: Option<String>,
    pub pool_size: usize,
    /// Other names requests may use for it.
    pub aliases: Vec<String>,
    /// Its file is an English-only model (`ggml-base.en.bin`): it cannot translate or detect
    /// a language, and whisper-server silently ignores both.
    pub english_only: bool,
}

impl ModelSpec {
    /// Whether a model file is English-only, from whisper's naming: `.en` ends the model's
    /// name, before the extension or a quantisation suffix (`ggml-tiny.en.bin`,
    /// `ggml-base.en-q5_1.bin`).
    pub fn is_english_only_file(path: &str) -> bool {
        let name = std::path::Path::new(path)
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().to_ascii_lowercase());
        name.ends_with(".en") || name.contains(".en.") || name.contains(".en-")
    }
}

/// Messages that wake the monitor before its next tick.
#[derive(Debug)]
pub enum MonitorEvent {
    /// Something changed (a worker failed a request, rotation became due): look now.
    Wake,
    /// Stop every worker and exit.
    Shutdown,
}

/// The pool as the rest of the service sees it.
pub struct Pool {
    state: Mutex<PoolState>,
    /// Signalled whenever the pool changed, for `wait_until` (a model load). Calls waiting
    /// in the queue each sleep on a condition variable of their own (`PoolState::enqueue`).
    changed: Condvar,
    pub config: PoolConfig,
    monitor: Sender<MonitorEvent>,
    pub started_at: Instant,
}

impl Pool {
    pub fn new(config: PoolConfig, monitor: Sender<MonitorEvent>) -> Pool {
        let now = Instant::now();
        let pool_size = config.default_pool_size();
        let rules = Rules {
            max_concurrent: config.max_concurrent,
            rotate_threshold: config.workers.rotate_threshold,
            backoff: Backoff {
                base: config.workers.backoff_base(),
                max: config.workers.backoff_max(),
            },
        };
        Pool {
            state: Mutex::new(PoolState::new(&config.model, pool_size, rules, now)),
            changed: Condvar::new(),
            config,
            monitor,
            started_at: now,
        }
    }

    /// The state lock, for this module only. A panic while holding it (a bug) poisons it; the
    /// bookkeeping is still the best information there is, so the service goes on with it
    /// rather than failing every later request.
    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until `check` finds what it wants in the state (re-checked whenever the pool
    /// changes), or `timeout` passes.
    fn wait_until<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&PoolState) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        loop {
            if let Some(found) = check(&state) {
                return Some(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Wakes every call waiting in the queue and every `wait_until`, after a change other
    /// than a worker given back (`PoolState::next_to_wake` covers that). Never called with the
    /// lock held.
    fn notify_changed(&self) {
        self.lock().wake_all();
        self.changed.notify_all();
    }

    /// Wakes the monitor.
    fn wake_monitor(&self) {
        let _ = self.monitor.send(MonitorEvent::Wake);
    }

    /// Workers and counts, all read at one instant.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot(Instant::now())
    }

    /// The pool's gauges for `/metrics`.
    pub fn gauges(&self) -> crate::metrics::PoolGauges {
        self.lock().gauges()
    }
}
