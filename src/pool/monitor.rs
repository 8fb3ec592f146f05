//! The monitor: the one thread that owns the worker processes (README "Behaviour under
//! failure").
//!
//! Every tick it reaps exited processes, checks starting workers for readiness, stops the ones
//! that are retiring, and spawns into empty slots whose backoff has elapsed. Health checks run
//! every `healthIntervalMs` and the audit every `auditIntervalMs`. Probes run in parallel on
//! short-lived threads and their answers are applied on a later tick, so the monitor never
//! waits for a worker: a hung one delays neither the other probes nor a respawn. It takes the
//! pool lock only to read a snapshot or apply a decision, never across a spawn, a signal or
//! an HTTP call.

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::{self, CallError};
use super::process::{self, WorkerProcess};
use super::state::Probe;
use super::worker_log;
use super::{MonitorEvent, Pool};

/// Upper bound on the monitor's sleep: how fast a crash, a finished drain or a ready worker
/// is noticed. Each tick is a few `waitpid(WNOHANG)` calls and, for starting workers, a
/// loopback connect, so 50 ms costs nothing measurable and keeps failover quick.
const TICK: Duration = Duration::from_millis(50);

/// Readiness probes of a starting worker are refused in microseconds until it binds; this caps
/// a probe that hangs on a half-started process.
const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// SIGTERM to SIGKILL (README "Behaviour under failure").
const STOP_GRACE: Duration = Duration::from_secs(5);

pub fn start(pool: Arc<Pool>, events: Receiver<MonitorEvent>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let mut monitor = Monitor {
                health: None,
                readiness: None,
                processes: HashMap::new(),
                next_health: Instant::now() + pool.config.workers.health_interval(),
                next_audit: Instant::now() + pool.config.workers.audit_interval(),
                pool,
            };
            monitor.run(&events);
        })
}

struct Monitor {
    pool: Arc<Pool>,
    /// The health round in progress, if any: its answers arrive here when all are in.
    health: Option<Receiver<ProbeResults>>,
    /// The readiness round over starting workers in progress, if any.
    readiness: Option<Receiver<ProbeResults>>,
    /// Live processes by worker id; only this thread touches them.
    processes: HashMap<String, WorkerProcess>,
    next_health: Instant,
    next_audit: Instant,
}

impl Monitor {
    fn run(&mut self, events: &Receiver<MonitorEvent>) {
        loop {
            self.tick();
            match events.recv_timeout(self.next_sleep()) {
                Ok(MonitorEvent::Wake) | Err(RecvTimeoutError::Timeout) => {}
                Ok(MonitorEvent::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        self.stop_all();
    }

    /// `TICK` while anything is under way, else until the next health round or audit.
    ///
    /// While the pool is settled (`PoolState::settled`: every worker healthy, no slot to fill)
    /// whatever needs the monitor arrives as an event: a worker's exit (its output closes,
    /// see `process::spawn`), a failed request or a due rotation (`Pool::release`), a model
    /// load or unload, the end of a health round (`probe_in_parallel`). An idle service thus
    /// wakes it twice per health round, to start it and to read its answers: on a virtual
    /// machine a wake-up costs more CPU than the look itself (README "Benchmarks").
    fn next_sleep(&self) -> Duration {
        let under_way = self.readiness.is_some()
            || self.processes.values().any(|p| p.kill_at.is_some())
            || !self.pool.lock().settled();
        if under_way {
            return TICK;
        }
        let due = self.next_health.min(self.next_audit);
        due.saturating_duration_since(Instant::now()).max(TICK)
    }

    fn tick(&mut self) {
        self.reap_exited();
        self.check_starting();
        let now = Instant::now();
        let health_due = now >= self.next_health && self.health.is_none();
        if health_due {
            self.next_health = now + self.pool.config.workers.health_interval();
        }
        self.poll_health(health_due);
        self.stop_retiring();
        self.fill_slots();
        if now >= self.next_audit {
            self.next_audit = now + self.pool.config.workers.audit_interval();
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
        let exits: Vec<_> = {
            let mut state = self.pool.lock();
            let now = Instant::now();
            exited
                .iter()
                .map(|(id, status)| (id, status, state.on_exit(id, now)))
                .collect()
        };
        for (id, status, exit) in exits {
            let process = self.processes.remove(id);
            match exit {
                Some(exit) if !exit.expected => {
                    // Why is in what it printed: a model it could not load, a port it could
                    // not bind.
                    let output = process.map_or_else(String::new, |p| {
                        let path = worker_log::path(&self.pool.config.log_dir, p.port);
                        format!("; its output is in {}", path.display())
                    });
                    log::warn!(
                        "{id} (pid {}) exited unexpectedly: {status}{output}",
                        exit.pid
                    )
                }
                _ => log::debug!("{id} stopped: {status}"),
            }
        }
        self.pool.notify_changed();
    }

    /// Starts a readiness round over the starting workers when none is running, applies the
    /// answers of a finished one (ready workers turn healthy), and kills the workers still not
    /// ready after `startupTimeoutMs`. Never waits for a probe.
    fn check_starting(&mut self) {
        if let Some(results) = finished(&mut self.readiness) {
            for (probe, result) in results {
                if result.is_ok() && self.pool.lock().on_healthy(&probe.id, Instant::now()) {
                    log::info!(
                        "{} is ready after {} ms",
                        probe.id,
                        probe.started_at.elapsed().as_millis()
                    );
                }
            }
            self.pool.notify_changed();
        }
        let starting = self.pool.lock().starting();
        let timeout = self.pool.config.workers.startup_timeout();
        for probe in starting.iter().filter(|p| p.started_at.elapsed() > timeout) {
            log::warn!(
                "{} was not ready within {} ms; killing it",
                probe.id,
                timeout.as_millis()
            );
            self.fail_worker(&probe.id);
        }
        if self.readiness.is_none() && !starting.is_empty() {
            let probe_timeout =
                STARTUP_PROBE_TIMEOUT.min(self.pool.config.workers.health_timeout());
            self.readiness = Some(probe_in_parallel(starting, probe_timeout, self.waker()));
        }
    }

    /// Starts a health round over the running workers (all probed at once, on threads of
    /// their own), and applies a finished one: `maxHealthFailures` in a row replaces a worker.
    /// A hung worker's probe therefore delays neither the other probes nor the monitor.
    fn poll_health(&mut self, due: bool) {
        if let Some(results) = finished(&mut self.health) {
            let max_failures = self.pool.config.workers.max_health_failures;
            for (probe, result) in results {
                let id = &probe.id;
                match result {
                    Ok(()) => {
                        if self.pool.lock().on_healthy(id, Instant::now()) {
                            log::info!("{id} is healthy again");
                        }
                    }
                    Err(why) => {
                        let Some(failures) = self.pool.lock().on_health_failure(id) else {
                            continue;
                        };
                        log::warn!(
                            "{id} failed its health check ({failures}/{max_failures}): {why}"
                        );
                        if failures >= max_failures {
                            self.fail_worker(id);
                        }
                    }
                }
            }
            self.pool.notify_changed();
        }
        if due && self.health.is_none() {
            let running = self.pool.lock().running();
            let timeout = self.pool.config.workers.health_timeout();
            self.health = Some(probe_in_parallel(running, timeout, self.waker()));
        }
    }

    /// Stops workers whose drain finished (or ran out of time), and kills hung ones.
    fn stop_retiring(&mut self) {
        let drain_timeout = self.pool.config.workers.drain_timeout();
        let (drained, hung) = self.pool.lock().retiring(drain_timeout);
        for id in drained {
            if !self.pool.lock().stop_drained(&id) {
                continue;
            }
            log::info!("{id} drained; stopping it");
            if let Some(p) = self.processes.get_mut(&id) {
                p.request_stop(STOP_GRACE);
            }
        }
        for id in hung {
            self.fail_worker(&id);
        }
    }

    /// Takes a worker out as a failure of its slot: stop accepting, SIGKILL, back off.
    fn fail_worker(&mut self, id: &str) {
        if !self.pool.lock().fail(id, Instant::now()) {
            return;
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
        let model = self.pool.lock().slot_model(slot).to_string();
        let model_path = config.models.get(&model).and_then(|m| m.path.as_deref());
        let Some(port) = process::pick_port(config.workers.starting_port, in_use) else {
            log::error!(
                "no free port at or above {}; cannot start a worker",
                config.workers.starting_port
            );
            self.pool.lock().record_slot_failure(slot, Instant::now());
            return None;
        };
        let process = match process::spawn(
            &config.command,
            port,
            model_path,
            &config.log_dir,
            &config.pid_dir,
            &self.pool.monitor,
        ) {
            Ok(p) => p,
            Err(why) => {
                log::error!("{why}");
                self.pool.lock().record_slot_failure(slot, Instant::now());
                return None;
            }
        };
        let id = self.pool.lock().add_starting(slot, port, process.pid());
        log::info!("starting {id} (pid {}, model {model})", process.pid());
        self.processes.insert(id, process);
        Some(port)
    }

    /// The periodic sweep: bookkeeping and processes agree, and the operator hears about a
    /// pool that is mostly down.
    fn audit(&mut self) {
        let (known, healthy) = {
            let state = self.pool.lock();
            (state.ids(), state.healthy_count())
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
        for id in &orphaned {
            self.pool.lock().forget(id);
            log::warn!("audit: {id} has no process; forgetting it");
        }
        let pool_size = self.pool.config.default_pool_size();
        if healthy * 2 < pool_size {
            log::warn!("audit: only {healthy} of {pool_size} workers are healthy");
        } else {
            log::debug!("audit: {healthy} of {pool_size} workers healthy");
        }
    }

    /// What a probe round sends when its answers are in, so the monitor need not poll for them.
    fn waker(&self) -> Sender<MonitorEvent> {
        self.pool.monitor.clone()
    }

    /// Shutdown: SIGTERM every worker, SIGKILL after `STOP_GRACE`, wait until all are reaped.
    fn stop_all(&mut self) {
        self.pool.lock().shut_down();
        log::info!("stopping {} worker(s)", self.processes.len());
        for p in self.processes.values_mut() {
            p.request_stop(STOP_GRACE);
        }
        while !self.processes.is_empty() {
            self.processes.retain(|_, p| p.poll_exit().is_none());
            std::thread::sleep(Duration::from_millis(20));
        }
        self.pool.lock().clear();
        self.pool.notify_changed();
    }
}

/// The answers of one round of `/health` probes.
type ProbeResults = Vec<(Probe, Result<(), CallError>)>;

/// Probes every worker of `probes` at once, each on a short-lived thread, and delivers all the
/// answers together when the slowest is in (at most `timeout` later), waking the monitor.
fn probe_in_parallel(
    probes: Vec<Probe>,
    timeout: Duration,
    monitor: Sender<MonitorEvent>,
) -> Receiver<ProbeResults> {
    let (tx, rx) = std::sync::mpsc::channel();
    let round = move || {
        let mut probes = probes;
        // The round's own thread probes the last worker, rather than wait idle for the others:
        // a thread fewer per round, which is most of what an idle service costs.
        let last = probes.pop();
        let results = std::thread::scope(|scope| {
            let probing: Vec<_> = probes
                .into_iter()
                .map(|probe| scope.spawn(move || probe_one(probe, timeout)))
                .collect();
            let last = last.map(|probe| probe_one(probe, timeout));
            let mut results: Vec<_> = probing.into_iter().filter_map(|p| p.join().ok()).collect();
            results.extend(last);
            results
        });
        let _ = tx.send(results);
        let _ = monitor.send(MonitorEvent::Wake);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("probe".into())
        .spawn(round)
    {
        log::warn!("cannot start a probe round: {e}");
    }
    rx
}

fn probe_one(probe: Probe, timeout: Duration) -> (Probe, Result<(), CallError>) {
    let result = client::health(probe.port, timeout);
    (probe, result)
}

/// The answers of a round that has finished, leaving `None` for the next one; `None` while it
/// runs (or when it could not start).
fn finished(round: &mut Option<Receiver<ProbeResults>>) -> Option<ProbeResults> {
    match round.as_ref()?.try_recv() {
        Ok(results) => {
            *round = None;
            Some(results)
        }
        Err(TryRecvError::Empty) => None,
        Err(TryRecvError::Disconnected) => {
            *round = None;
            None
        }
    }
}
