//! The worker pool: shared state, the monitor that owns the processes, and the dispatch that
//! lends workers to requests.
//!
//! - `state`: `PoolState`, the bookkeeping behind the one mutex; pure logic, unit-tested.
//! - `monitor`: the single thread that spawns, health-checks, rotates, reaps and stops.
//! - `dispatch`: a request's side: wait for an idle worker (bounded FIFO), call it, retry once.
//! - `process`: spawning, signals, the log pump, pid records, orphan reaping, port checks.
//! - `client`: the whisper-server HTTP protocol over `ureq`.

pub mod client;
pub mod dispatch;
pub mod monitor;
pub mod process;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::settings::WorkerSettings;
use process::WorkerCommand;
use state::PoolState;

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
    pub log_dir: PathBuf,
    pub pid_dir: PathBuf,
}

/// How to run one model's workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// `-m` path, when the manager adds one (not when `whisperServer.args` choose the model).
    pub path: Option<String>,
    pub pool_size: usize,
}

impl PoolConfig {
    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    pub fn health_interval(&self) -> Duration {
        Self::ms(self.workers.health_interval_ms)
    }

    pub fn health_timeout(&self) -> Duration {
        Self::ms(self.workers.health_timeout_ms)
    }

    pub fn startup_timeout(&self) -> Duration {
        Self::ms(self.workers.startup_timeout_ms)
    }

    pub fn drain_timeout(&self) -> Duration {
        Self::ms(self.workers.drain_timeout_ms)
    }

    pub fn audit_interval(&self) -> Duration {
        Self::ms(self.workers.audit_interval_ms)
    }

    pub fn backoff_base(&self) -> Duration {
        Self::ms(self.workers.backoff_base_ms)
    }

    pub fn backoff_max(&self) -> Duration {
        Self::ms(self.workers.backoff_max_ms)
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
    /// Signalled whenever a worker may have become idle or the pool changed, for the queue.
    changed: Condvar,
    pub config: PoolConfig,
    monitor: Sender<MonitorEvent>,
    pub started_at: Instant,
}

/// One worker as `/api/v1/status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerView {
    pub id: String,
    pub port: u16,
    pub pid: u32,
    pub model: String,
    pub state: &'static str,
    pub accepting_requests: bool,
    pub in_flight: usize,
    pub request_count: u64,
    pub consecutive_failures: u32,
    pub restarts: u64,
    /// Milliseconds since the process started.
    pub uptime: u64,
}

/// Pool-wide counts for `/health`, `/api/v1/providers` and the capacity block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSummary {
    pub healthy: usize,
    pub total: usize,
    pub in_flight: usize,
    pub queue_depth: usize,
}

impl Pool {
    pub fn new(config: PoolConfig, monitor: Sender<MonitorEvent>) -> Pool {
        let now = Instant::now();
        let pool_size = config
            .models
            .get(&config.model)
            .map_or(config.workers.pool_size, |m| m.pool_size);
        let mut state = PoolState::new(&config.model, pool_size, now);
        state.max_concurrent = config.max_concurrent;
        Pool {
            state: Mutex::new(state),
            changed: Condvar::new(),
            config,
            monitor,
            started_at: now,
        }
    }

    /// The state lock. A panic while holding it (a bug) poisons it; the bookkeeping is still
    /// the best information there is, so the service goes on with it rather than failing
    /// every later request.
    pub fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits until `check` finds what it wants in the state (re-checked whenever the pool
    /// changes), or `timeout` passes.
    pub fn wait_until<T>(
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

    /// Wakes the request threads waiting in the queue.
    pub fn notify_changed(&self) {
        self.changed.notify_all();
    }

    /// Wakes the monitor.
    pub fn wake_monitor(&self) {
        let _ = self.monitor.send(MonitorEvent::Wake);
    }

    pub fn summary(&self) -> PoolSummary {
        let state = self.lock();
        PoolSummary {
            healthy: state.healthy_count(),
            total: state.live_count(),
            in_flight: state.workers.iter().map(|w| w.in_flight).sum(),
            queue_depth: state.queue.len(),
        }
    }

    /// The pool's gauges for `/metrics`.
    pub fn gauges(&self) -> crate::metrics::PoolGauges {
        use state::WorkerState::*;
        let state = self.lock();
        let count = |s: state::WorkerState| state.workers.iter().filter(|w| w.state == s).count();
        crate::metrics::PoolGauges {
            workers: [Starting, Healthy, Unhealthy, Draining, Stopped]
                .map(|s| (s.as_str(), count(s)))
                .to_vec(),
            restarts: state.slots.iter().map(|s| s.restarts).sum(),
            rotations: state.rotations,
            in_flight: state.workers.iter().map(|w| w.in_flight).sum(),
            queue_depth: state.queue.len(),
        }
    }

    pub fn worker_views(&self) -> Vec<WorkerView> {
        let state = self.lock();
        let now = Instant::now();
        state
            .workers
            .iter()
            .map(|w| WorkerView {
                id: w.id.clone(),
                port: w.port,
                pid: w.pid,
                model: w.model.clone(),
                state: w.state.as_str(),
                accepting_requests: w.accepting && w.state == state::WorkerState::Healthy,
                in_flight: w.in_flight,
                request_count: w.request_count,
                consecutive_failures: w.consecutive_failures,
                restarts: state.slots.get(w.slot).map_or(0, |s| s.restarts),
                uptime: now.duration_since(w.started_at).as_millis() as u64,
            })
            .collect()
    }
}
