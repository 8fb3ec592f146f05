//! The monitor: the one thread that owns the worker processes (SPEC section 4).
//!
//! Every tick it reaps exited processes, checks starting workers for readiness, stops the ones
//! that are retiring, and spawns into empty slots whose backoff has elapsed. Health checks run
//! every `healthIntervalMs` and the audit every `auditIntervalMs`. It takes the pool lock only
//! to read a snapshot or apply a decision, never across a spawn, a signal or an HTTP call.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client;
use super::process::{self, WorkerProcess};
use super::state::{Worker, WorkerState};
use super::{MonitorEvent, Pool};

/// Upper bound on the monitor's sleep: how fast a crash, a finished drain or a ready worker
/// is noticed. Each tick is a few `waitpid(WNOHANG)` calls and, for starting workers, a
/// loopback connect, so 50 ms costs nothing measurable and keeps failover quick.
const TICK: Duration = Duration::from_millis(50);

/// Readiness probes of a starting worker are refused in microseconds until it binds; this caps
/// a probe that hangs on a half-started process.
const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// SIGTERM to SIGKILL (SPEC section 7).
const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn start(pool: Arc<Pool>, events: Receiver<MonitorEvent>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let mut monitor = Monitor {
                processes: HashMap::new(),
                next_health: Instant::now() + pool.config.health_interval(),
                next_audit: Instant::now() + pool.config.audit_interval(),
                pool,
            };
            monitor.run(&events);
        })
}

struct Monitor {
    pool: Arc<Pool>,
    /// Live processes by worker id; only this thread touches them.
    processes: HashMap<String, WorkerProcess>,
    next_health: Instant,
    next_audit: Instant,
}

impl Monitor {
    fn run(&mut self, events: &Receiver<MonitorEvent>) {
        loop {
            self.tick();
            match events.recv_timeout(TICK) {
                Ok(MonitorEvent::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Ok(MonitorEvent::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.stop_all();
    }

    fn tick(&mut self) {
        self.reap_exited();
        self.check_starting();
        let now = Instant::now();
        if now >= self.next_health {
            self.next_health = now + self.pool.config.health_interval();
            self.poll_health();
        }
        self.stop_retiring();
        self.fill_slots();
        if now >= self.next_audit {
            self.next_audit = now + self.pool.config.audit_interval();
            self.audit();
        }
    }

    /// Processes that exited: intended ones are forgotten, the others count as a slot failure.
    fn reap_exited(&mut self) {
        let exited: Vec<(String, std::process::ExitStatus)> = self
            .processes
            .iter_mut()
            .filter_map(|(id, p)| p.poll_exit().map(|status| (id.clone(), status)))
            .collect();
        if exited.is_empty() {
            return;
        }
        let config = &self.pool.config;
        {
            let mut state = self.pool.lock();
            for (id, status) in &exited {
                let Some(worker) = state.remove(id) else {
                    continue;
                };
                if !matches!(worker.state, WorkerState::Stopped | WorkerState::Draining) {
                    log::warn!("{id} (pid {}) exited unexpectedly: {status}", worker.pid);
                    state.record_slot_failure(
                        worker.slot,
                        config.backoff_base(),
                        config.backoff_max(),
                        Instant::now(),
                    );
                } else {
                    log::debug!("{id} stopped: {status}");
                }
            }
        }
        for (id, _) in &exited {
            self.processes.remove(id);
        }
        self.pool.notify_changed();
    }

    /// Probes starting workers; ready ones turn healthy, late ones are killed as failures.
    fn check_starting(&mut self) {
        let starting: Vec<(String, u16, Instant)> = self
            .pool
            .lock()
            .workers
            .iter()
            .filter(|w| w.state == WorkerState::Starting)
            .map(|w| (w.id.clone(), w.port, w.started_at))
            .collect();
        let timeout = self.pool.config.startup_timeout();
        let probe_timeout = STARTUP_PROBE_TIMEOUT.min(self.pool.config.health_timeout());
        for (id, port, started_at) in starting {
            if client::health(port, probe_timeout).is_ok() {
                log::info!(
                    "{id} is ready after {} ms",
                    started_at.elapsed().as_millis()
                );
                self.pool.lock().on_healthy(&id, Instant::now());
                self.pool.notify_changed();
            } else if started_at.elapsed() > timeout {
                log::warn!(
                    "{id} was not ready within {} ms; killing it",
                    timeout.as_millis()
                );
                self.fail_worker(&id);
            }
        }
    }

    /// `GET /health` on every running worker; `maxHealthFailures` in a row replaces it.
    fn poll_health(&mut self) {
        let running: Vec<(String, u16)> = self
            .pool
            .lock()
            .workers
            .iter()
            .filter(|w| matches!(w.state, WorkerState::Healthy | WorkerState::Unhealthy))
            .map(|w| (w.id.clone(), w.port))
            .collect();
        let max_failures = self.pool.config.workers.max_health_failures;
        for (id, port) in running {
            let result = client::health(port, self.pool.config.health_timeout());
            let mut state = self.pool.lock();
            let Some(worker) = state.worker_mut(&id) else {
                continue;
            };
            match result {
                Ok(()) if worker.state == WorkerState::Unhealthy => {
                    log::info!("{id} is healthy again");
                    state.on_healthy(&id, Instant::now());
                }
                Ok(()) => worker.consecutive_failures = 0,
                Err(why) => {
                    worker.consecutive_failures += 1;
                    if worker.state == WorkerState::Healthy {
                        worker.state = WorkerState::Unhealthy;
                    }
                    let failures = worker.consecutive_failures;
                    log::warn!("{id} failed its health check ({failures}/{max_failures}): {why}");
                    if failures >= max_failures {
                        drop(state);
                        self.fail_worker(&id);
                    }
                }
            }
        }
        self.pool.notify_changed();
    }

    /// Stops workers whose drain finished (or ran out of time), and kills hung ones.
    fn stop_retiring(&mut self) {
        let drain_timeout = self.pool.config.drain_timeout();
        let (to_stop, to_fail): (Vec<String>, Vec<String>) = {
            let state = self.pool.lock();
            let drained = |w: &&Worker| {
                w.state == WorkerState::Draining
                    && (w.in_flight == 0
                        || w.draining_since
                            .is_some_and(|t| t.elapsed() >= drain_timeout))
            };
            let stop = state
                .workers
                .iter()
                .filter(drained)
                .map(|w| w.id.clone())
                .collect();
            let fail = state
                .workers
                .iter()
                .filter(|w| w.recycle && w.state != WorkerState::Stopped)
                .map(|w| w.id.clone())
                .collect();
            (stop, fail)
        };
        for id in to_stop {
            log::info!("{id} drained; stopping it");
            let mut state = self.pool.lock();
            if let Some(worker) = state.worker_mut(&id) {
                worker.state = WorkerState::Stopped;
            }
            state.rotations += 1;
            drop(state);
            if let Some(p) = self.processes.get_mut(&id) {
                p.request_stop(STOP_GRACE);
            }
        }
        for id in to_fail {
            self.fail_worker(&id);
        }
    }

    /// Takes a worker out as a failure of its slot: stop accepting, SIGKILL, back off.
    fn fail_worker(&mut self, id: &str) {
        let config = &self.pool.config;
        {
            let mut state = self.pool.lock();
            let Some(worker) = state.worker_mut(id) else {
                return;
            };
            if worker.state == WorkerState::Stopped {
                return;
            }
            worker.state = WorkerState::Stopped;
            worker.accepting = false;
            let slot = worker.slot;
            state.record_slot_failure(
                slot,
                config.backoff_base(),
                config.backoff_max(),
                Instant::now(),
            );
        }
        if let Some(p) = self.processes.get_mut(id) {
            p.kill_now();
        }
        self.pool.notify_changed();
    }

    /// Spawns a worker into every slot that has none and is past its backoff.
    fn fill_slots(&mut self) {
        let (slots, in_use) = {
            let state = self.pool.lock();
            (state.slots_to_fill(Instant::now()), state.ports_in_use())
        };
        let mut in_use = in_use;
        for slot in slots {
            if let Some(port) = self.spawn_into(slot, &in_use) {
                in_use.push(port);
            }
        }
    }

    fn spawn_into(&mut self, slot: usize, in_use: &[u16]) -> Option<u16> {
        let config = &self.pool.config;
        let model = self.pool.lock().slots[slot].model.clone();
        let model_path = config.models.get(&model).and_then(|m| m.path.as_deref());
        let Some(port) = process::pick_port(config.workers.starting_port, in_use) else {
            log::error!(
                "no free port at or above {}; cannot start a worker",
                config.workers.starting_port
            );
            self.pool.lock().record_slot_failure(
                slot,
                config.backoff_base(),
                config.backoff_max(),
                Instant::now(),
            );
            return None;
        };
        let spawned = process::spawn(
            &config.command,
            port,
            model_path,
            &config.log_dir,
            &config.pid_dir,
        );
        let mut state = self.pool.lock();
        let process = match spawned {
            Ok(p) => p,
            Err(why) => {
                log::error!("{why}");
                state.record_slot_failure(
                    slot,
                    config.backoff_base(),
                    config.backoff_max(),
                    Instant::now(),
                );
                return None;
            }
        };
        state.spawn_seq += 1;
        let id = format!("worker-{port}-{}", state.spawn_seq);
        let slot_state = &mut state.slots[slot];
        if slot_state.failures > 0 {
            slot_state.restarts += 1;
        }
        log::info!("starting {id} (pid {}, model {model})", process.pid());
        state.workers.push(Worker::starting(
            id.clone(),
            slot,
            port,
            process.pid(),
            model,
        ));
        drop(state);
        self.processes.insert(id, process);
        Some(port)
    }

    /// The periodic sweep: bookkeeping and processes agree, and the operator hears about a
    /// pool that is mostly down.
    fn audit(&mut self) {
        let (known, healthy): (Vec<String>, usize) = {
            let state = self.pool.lock();
            (
                state.workers.iter().map(|w| w.id.clone()).collect(),
                state.healthy_count(),
            )
        };
        for id in self
            .processes
            .keys()
            .filter(|id| !known.contains(id))
            .cloned()
            .collect::<Vec<_>>()
        {
            log::warn!("audit: process of {id} is not in the pool; stopping it");
            if let Some(p) = self.processes.get_mut(&id) {
                p.request_stop(STOP_GRACE);
            }
        }
        let orphaned: Vec<String> = known
            .iter()
            .filter(|id| !self.processes.contains_key(*id))
            .cloned()
            .collect();
        if !orphaned.is_empty() {
            let mut state = self.pool.lock();
            for id in &orphaned {
                log::warn!("audit: {id} has no process; forgetting it");
                state.remove(id);
            }
        }
        let pool_size = self.pool.config.workers.pool_size;
        if healthy * 2 < pool_size {
            log::warn!("audit: only {healthy} of {pool_size} workers are healthy");
        } else {
            log::debug!("audit: {healthy} of {pool_size} workers healthy");
        }
    }

    /// Shutdown: SIGTERM every worker, SIGKILL after `STOP_GRACE`, wait until all are reaped.
    fn stop_all(&mut self) {
        self.pool.lock().shutting_down = true;
        log::info!("stopping {} worker(s)", self.processes.len());
        for p in self.processes.values_mut() {
            p.request_stop(STOP_GRACE);
        }
        while !self.processes.is_empty() {
            self.processes.retain(|_, p| p.poll_exit().is_none());
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut state = self.pool.lock();
        state.workers.clear();
        drop(state);
        self.pool.notify_changed();
    }
}
