//! `PoolState`: everything the request threads and the monitor share, behind one mutex.
//!
//! Its fields are private: every change is a method here that checks the state it starts
//! from (a worker turns healthy only from `starting` or `unhealthy`, a drained worker stops
//! only from `draining`, ...), so a late event can never undo a later decision. The methods
//! are pure bookkeeping; they never do I/O, so the lock is held for microseconds. Processes,
//! sockets and sleeps live in `monitor.rs` and `dispatch.rs`, which take the lock in short
//! blocks around these calls.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar};
use std::time::SystemTime;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::ApiError;
use crate::metrics::PoolGauges;

/// The life of one worker process (README "Behaviour under failure").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Spawned, `/health` not yet 2xx.
    Starting,
    /// Answering `/health`; can take requests.
    Healthy,
    /// Failed its last health check(s) or a request's connection; takes no requests until a
    /// health check passes again.
    Unhealthy,
    /// Takes no new requests; stopped once its in-flight request finishes.
    Draining,
    /// Signalled to stop; kept here until the process is reaped so its port stays reserved.
    Stopped,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Healthy => "healthy",
            WorkerState::Unhealthy => "unhealthy",
            WorkerState::Draining => "draining",
            WorkerState::Stopped => "stopped",
        }
    }

    const ALL: [WorkerState; 5] = [
        WorkerState::Starting,
        WorkerState::Healthy,
        WorkerState::Unhealthy,
        WorkerState::Draining,
        WorkerState::Stopped,
    ];
}

#[derive(Debug, Clone)]
struct Worker {
    /// `worker-<port>-<n>`: the port for the operator, `n` so a respawn on the same port has a
    /// new id.
    id: String,
    /// The pool slot this worker fills; a slot is respawned with backoff when its worker fails.
    slot: usize,
    port: u16,
    pid: u32,
    /// Model id from the settings (or `default` when `whisperServer.args` choose the model).
    model: String,
    state: WorkerState,
    /// `false` once the worker is retiring (rotation or recycling): no new requests.
    accepting: bool,
    /// Requests being served right now; whisper-server does one inference at a time, so 0 or 1.
    in_flight: usize,
    /// Requests completed by this process; drives rotation.
    request_count: u64,
    /// Consecutive failed health checks.
    consecutive_failures: u32,
    /// Reached `rotateThreshold`: replaced as soon as that keeps capacity above zero.
    rotation_due: bool,
    /// Its inference passed the deadline: whisper-server hangs like that with `/health` fine,
    /// so it is killed and replaced, not trusted again.
    recycle: bool,
    started_at: Instant,
    /// When it entered `Draining`, for `drainTimeoutMs`.
    draining_since: Option<Instant>,
}

impl Worker {
    /// Counts toward its slot's capacity: alive, not on its way out.
    fn is_primary(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Starting | WorkerState::Healthy | WorkerState::Unhealthy
        ) && !self.rotation_due
            && !self.recycle
    }

    fn is_idle_for(&self, model: &str) -> bool {
        self.state == WorkerState::Healthy
            && self.accepting
            && self.in_flight == 0
            && self.model == model
    }

    fn start_draining(&mut self, now: Instant) {
        self.accepting = false;
        self.state = WorkerState::Draining;
        self.draining_since = Some(now);
    }
}

/// One place in the pool: `poolSize` of them per served model.
#[derive(Debug, Clone)]
struct Slot {
    model: String,
    /// `false` once its model is unloaded: no more spawns. Kept for reuse when the model is
    /// loaded again, so slots stay bounded by the largest pool a model ever had.
    active: bool,
    /// Consecutive failures of this slot's workers (crash, failed start, health, hang); reset
    /// when one of its workers turns healthy. Drives the backoff.
    failures: u32,
    /// Respawns after a failure, for `/api/v1/status`.
    restarts: u64,
    /// Earliest time the next worker of this slot may be spawned.
    not_before: Instant,
}

impl Slot {
    fn new(model: &str, restarts: u64, now: Instant) -> Slot {
        Slot {
            model: model.to_string(),
            active: true,
            failures: 0,
            restarts,
            not_before: now,
        }
    }
}

/// How a request's use of a worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The worker answered (2xx or its own 4xx).
    Completed,
    /// Connection refused or cut, or a 5xx after which `/health` fails: the process is gone.
    Crashed,
    /// No answer before the deadline: kill and replace it.
    Hung,
    /// The connection failed but the worker answers `/health`: a stale pooled socket, not a
    /// fault of the worker. Nothing is recorded.
    Interrupted,
    /// The client's own deadline passed first and the connection was closed, which makes
    /// whisper-server abort the inference: the worker is fine. Nothing is recorded.
    Cancelled,
}

/// A model's life as `/api/models` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelState {
    Cold,
    Loading,
    Warm,
}

impl ModelState {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelState::Cold => "cold",
            ModelState::Loading => "loading",
            ModelState::Warm => "warm",
        }
    }
}

/// What the model manager notes about one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ModelEntry {
    /// Loads waiting for this model's workers right now.
    loads_waiting: usize,
    /// The last request it served; drives LRU eviction.
    last_used: Option<SystemTime>,
}

/// A call waiting for an idle worker.
#[derive(Debug, Clone)]
struct Waiter {
    ticket: u64,
    model: String,
    /// The request it belongs to: chunks of one recording share a group.
    group: u64,
    /// What its thread sleeps on, with the pool's lock: a freed worker wakes the one call next
    /// for it (`next_to_wake`), not every waiting call.
    wake: Arc<Condvar>,
}

/// Waiting calls to wake, taken under the pool's lock and woken after it (`Wake::notify`).
#[must_use = "the waiting calls sleep until notified"]
pub struct Wake(Vec<Arc<Condvar>>);

impl Wake {
    /// Wakes each of them (the pool's lock no longer held).
    pub fn notify(self) {
        for waiter in self.0 {
            waiter.notify_one();
        }
    }
}

/// A worker handed to one request; give it back with `PoolState::finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub worker_id: String,
    pub port: u16,
}

/// The respawn delay after consecutive failures: at once after the first, then
/// `min(max, base * 2^(failures-1))`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Backoff {
    /// Delay before the respawn that follows `failures_so_far` consecutive failures.
    pub fn delay(&self, failures_so_far: u32) -> Duration {
        if failures_so_far == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32.checked_shl(failures_so_far - 1).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// The fixed rules the state applies, from the settings.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// `inference.maxConcurrentInferences`: inferences at once across all models and routes.
    pub max_concurrent: usize,
    /// `workers.rotateThreshold`: requests a worker serves before it is replaced.
    pub rotate_threshold: u64,
    pub backoff: Backoff,
}

/// A worker exited: what the monitor logs about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    /// `false` when nobody asked it to stop: a crash, counted against its slot.
    pub expected: bool,
}

/// A worker the monitor has to probe or stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub id: String,
    pub port: u16,
    pub started_at: Instant,
}

/// One worker as `/api/v1/status` shows it.
#[derive(Debug, Clone, Serialize)]
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

/// The pool at one instant: every count read in the same critical section, so they agree.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub workers: Vec<WorkerView>,
    /// Workers answering `/health`, all models.
    pub healthy: usize,
    /// Workers alive and not stopped, all models.
    pub total: usize,
    pub in_flight: usize,
    pub queue_depth: usize,
}

/// A model as `/api/models` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelStatus {
    pub id: String,
    pub state: ModelState,
    /// Workers counting toward its capacity.
    pub workers: usize,
    pub last_used: Option<SystemTime>,
}

#[derive(Debug)]
pub struct PoolState {
    workers: Vec<Worker>,
    slots: Vec<Slot>,
    /// Calls waiting for an idle worker, oldest first.
    queue: VecDeque<Waiter>,
    /// Per group (one request, however many chunks it has), when it was last given a worker,
    /// as a count of leases: the next worker goes to the waiting group served longest ago.
    last_served: BTreeMap<u64, u64>,
    /// Leases given so far: the clock of `last_served`.
    leases: u64,
    rules: Rules,
    /// The model served by default: its workers start with the service, and eviction spares it.
    default_model: String,
    /// Per model id: what the model manager tracks (loads in progress, last use).
    models: BTreeMap<String, ModelEntry>,
    /// Next ticket number; tickets only need to be unique while queued.
    next_ticket: u64,
    /// Where the round-robin scan for an idle worker starts next time.
    rr_cursor: usize,
    /// Spawn counter for worker ids.
    spawn_seq: u64,
    /// Workers replaced after reaching `rotateThreshold`, for metrics and the log.
    rotations: u64,
    /// Set at shutdown: no more spawns.
    shutting_down: bool,
}

impl PoolState {
    /// `pool_size` slots for `model`, all due to spawn now.
    pub fn new(model: &str, pool_size: usize, rules: Rules, now: Instant) -> Self {
        PoolState {
            workers: Vec::new(),
            slots: (0..pool_size).map(|_| Slot::new(model, 0, now)).collect(),
            queue: VecDeque::new(),
            last_served: BTreeMap::new(),
            leases: 0,
            rules,
            default_model: model.to_string(),
            models: BTreeMap::new(),
            next_ticket: 0,
            rr_cursor: 0,
            spawn_seq: 0,
            rotations: 0,
            shutting_down: false,
        }
    }

    #[cfg(test)]
    fn worker(&self, id: &str) -> Option<&Worker> {
        self.workers.iter().find(|w| w.id == id)
    }

    fn worker_mut(&mut self, id: &str) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.id == id)
    }

    fn count(&self, wanted: impl Fn(&Worker) -> bool) -> usize {
        self.workers.iter().filter(|w| wanted(w)).count()
    }

    pub fn healthy_count(&self) -> usize {
        self.count(|w| w.state == WorkerState::Healthy)
    }

    /// Inferences running now, all models.
    fn in_flight(&self) -> usize {
        self.workers.iter().map(|w| w.in_flight).sum()
    }

    // ---- the request side: leases and the queue ----

    /// Takes the next idle healthy worker for `model`, round-robin, and marks it busy; none
    /// while `max_concurrent` inferences are already running.
    pub fn take_idle(&mut self, model: &str) -> Option<Lease> {
        if self.in_flight() >= self.rules.max_concurrent {
            return None;
        }
        let n = self.workers.len();
        let index = (0..n)
            .map(|i| (self.rr_cursor + i) % n)
            .find(|&i| self.workers[i].is_idle_for(model))?;
        self.rr_cursor = index + 1;
        self.touch(model);
        let worker = &mut self.workers[index];
        worker.in_flight += 1;
        Some(Lease {
            worker_id: worker.id.clone(),
            port: worker.port,
        })
    }

    /// Whether a request for `model` can expect a worker soon: one is healthy, starting, or
    /// busy. `false` means every slot is dead or backing off.
    pub fn has_live_worker(&self, model: &str) -> bool {
        self.workers.iter().any(|w| {
            w.model == model
                && matches!(
                    w.state,
                    WorkerState::Starting | WorkerState::Healthy | WorkerState::Draining
                )
        })
    }

    /// How long until a slot of `model` spawns again: the `Retry-After` for
    /// `NO_HEALTHY_WORKERS`.
    pub fn next_spawn_in(&self, model: &str, now: Instant) -> Duration {
        self.slots
            .iter()
            .filter(|s| s.model == model)
            .map(|s| s.not_before.saturating_duration_since(now))
            .min()
            .unwrap_or_default()
    }

    /// Requests waiting, however many calls each has waiting: what `maxQueue` limits.
    pub fn queue_len(&self) -> usize {
        let mut groups: Vec<u64> = self.queue.iter().map(|w| w.group).collect();
        groups.sort_unstable();
        groups.dedup();
        groups.len()
    }

    /// Whether a call for `model` is already waiting (a newcomer must queue behind it).
    pub fn has_waiting(&self, model: &str) -> bool {
        self.queue.iter().any(|w| w.model == model)
    }

    /// Whether `group` already has a call waiting (its next one adds no request to the queue).
    pub fn group_is_waiting(&self, group: u64) -> bool {
        self.queue.iter().any(|w| w.group == group)
    }

    /// Puts a call of `group` for `model` at the back of the queue; returns its ticket and
    /// the condition variable its thread waits on (with this state's lock).
    pub fn enqueue(&mut self, model: &str, group: u64) -> (u64, Arc<Condvar>) {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let wake = Arc::new(Condvar::new());
        self.queue.push_back(Waiter {
            ticket,
            model: model.to_string(),
            group,
            wake: Arc::clone(&wake),
        });
        (ticket, wake)
    }

    /// Whether `ticket` is next for a worker of `model`: of the waiting calls for it, the one
    /// whose group was served longest ago (never beats ever), the oldest on a tie. So requests
    /// take turns, a call each: a short clip waits for at most one chunk of a long recording.
    pub fn is_next(&self, ticket: u64, model: &str) -> bool {
        self.next_for(model).is_some_and(|w| w.ticket == ticket)
    }

    fn next_for(&self, model: &str) -> Option<&Waiter> {
        self.queue
            .iter()
            .filter(|w| w.model == model)
            .min_by_key(|w| {
                (
                    self.last_served.get(&w.group).copied().unwrap_or(0),
                    w.ticket,
                )
            })
    }

    /// For each model with a worker free to take a call, the waiting call next for it: the
    /// one wake-up a freed worker needs. (Waking every waiting call had all but one of them
    /// take the lock only to sleep again: with 16 clients on 2 workers, 14 wake-ups per
    /// request.) The caller notifies them once it has let go of the lock, so a woken thread
    /// does not find the lock still held and sleep again on it.
    pub fn next_to_wake(&self) -> Wake {
        let mut wake = Wake(Vec::new());
        if self.in_flight() >= self.rules.max_concurrent {
            return wake;
        }
        let mut seen: Vec<&str> = Vec::new();
        for waiter in &self.queue {
            let model = waiter.model.as_str();
            if seen.contains(&model) {
                continue;
            }
            seen.push(model);
            if self.workers.iter().any(|w| w.is_idle_for(model)) {
                if let Some(next) = self.next_for(model) {
                    wake.0.push(Arc::clone(&next.wake));
                }
            }
        }
        wake
    }

    /// Wakes every waiting call, to look again at a state that changed otherwise (a worker
    /// ready or gone, a model loaded or unloaded).
    pub fn wake_all(&self) {
        for waiter in &self.queue {
            waiter.wake.notify_one();
        }
    }

    pub fn dequeue(&mut self, ticket: u64) {
        self.queue.retain(|w| w.ticket != ticket);
    }

    /// Notes that `group` was just given a worker.
    pub fn served(&mut self, group: u64) {
        self.leases += 1;
        self.last_served.insert(group, self.leases);
    }

    /// Forgets a finished request's turn.
    pub fn end_group(&mut self, group: u64) {
        self.last_served.remove(&group);
    }

    /// Gives a leased worker back and applies what the request learned about it. Returns
    /// whether the monitor has something to do (a failure, a rotation).
    pub fn finish(&mut self, lease: &Lease, outcome: Outcome, now: Instant) -> bool {
        let threshold = self.rules.rotate_threshold;
        let Some(worker) = self.worker_mut(&lease.worker_id) else {
            return false;
        };
        worker.in_flight = worker.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Completed => {
                worker.request_count += 1;
                if worker.request_count < threshold || worker.rotation_due {
                    return false;
                }
                worker.rotation_due = true;
                let (id, model) = (worker.id.clone(), worker.model.clone());
                self.retire_if_covered(&id, &model, now);
                true
            }
            Outcome::Crashed => {
                if worker.state == WorkerState::Healthy {
                    worker.state = WorkerState::Unhealthy;
                }
                true
            }
            Outcome::Hung => {
                worker.recycle = true;
                worker.accepting = false;
                true
            }
            Outcome::Interrupted | Outcome::Cancelled => false,
        }
    }

    /// A rotation-due worker stops taking requests at once if another worker of its model is
    /// healthy and accepting; otherwise it keeps serving until its replacement is healthy, so
    /// rotation never takes capacity to zero.
    fn retire_if_covered(&mut self, id: &str, model: &str, now: Instant) {
        let covered = self.workers.iter().any(|w| {
            w.id != id
                && w.model == model
                && w.state == WorkerState::Healthy
                && w.accepting
                && !w.rotation_due
        });
        if covered {
            if let Some(worker) = self.worker_mut(id) {
                worker.start_draining(now);
            }
        }
    }

    // ---- the monitor side: the workers' lives ----

    /// Records a freshly spawned worker of `slot`; returns its id.
    pub fn add_starting(&mut self, slot: usize, port: u16, pid: u32) -> String {
        self.spawn_seq += 1;
        let id = format!("worker-{port}-{}", self.spawn_seq);
        let slot_state = &mut self.slots[slot];
        if slot_state.failures > 0 {
            slot_state.restarts += 1;
        }
        self.workers.push(Worker {
            id: id.clone(),
            slot,
            port,
            pid,
            model: slot_state.model.clone(),
            state: WorkerState::Starting,
            accepting: true,
            in_flight: 0,
            request_count: 0,
            consecutive_failures: 0,
            rotation_due: false,
            recycle: false,
            started_at: Instant::now(),
            draining_since: None,
        });
        id
    }

    /// The model a slot runs.
    pub fn slot_model(&self, slot: usize) -> &str {
        &self.slots[slot].model
    }

    /// Workers waiting for their first good `/health`.
    pub fn starting(&self) -> Vec<Probe> {
        self.probes(|w| w.state == WorkerState::Starting)
    }

    /// Workers whose health is polled: healthy and unhealthy ones.
    pub fn running(&self) -> Vec<Probe> {
        self.probes(|w| matches!(w.state, WorkerState::Healthy | WorkerState::Unhealthy))
    }

    fn probes(&self, wanted: impl Fn(&Worker) -> bool) -> Vec<Probe> {
        self.workers
            .iter()
            .filter(|w| wanted(w))
            .map(|w| Probe {
                id: w.id.clone(),
                port: w.port,
                started_at: w.started_at,
            })
            .collect()
    }

    /// A worker answered `/health`: it turns healthy from `starting` or `unhealthy` (from any
    /// other state the answer is stale: a draining or stopped worker stays so). Its slot is no
    /// longer failing, and the workers it replaces can drain. Returns whether it turned.
    pub fn on_healthy(&mut self, id: &str, now: Instant) -> bool {
        let Some(worker) = self.worker_mut(id) else {
            return false;
        };
        let was = worker.state;
        worker.consecutive_failures = 0;
        if !matches!(was, WorkerState::Starting | WorkerState::Unhealthy) {
            return false;
        }
        worker.state = WorkerState::Healthy;
        let slot = worker.slot;
        if was == WorkerState::Starting {
            self.slots[slot].failures = 0;
            for predecessor in self
                .workers
                .iter_mut()
                .filter(|w| w.slot == slot && w.id != id && w.rotation_due)
            {
                if predecessor.state != WorkerState::Stopped {
                    predecessor.start_draining(now);
                }
            }
        }
        true
    }

    /// A running worker failed a health check; returns its consecutive failures (`None` when it
    /// is no longer running). A healthy worker turns unhealthy.
    pub fn on_health_failure(&mut self, id: &str) -> Option<u32> {
        let worker = self.worker_mut(id)?;
        if !matches!(worker.state, WorkerState::Healthy | WorkerState::Unhealthy) {
            return None;
        }
        worker.consecutive_failures += 1;
        worker.state = WorkerState::Unhealthy;
        Some(worker.consecutive_failures)
    }

    /// Takes a worker out as a failure of its slot: stop accepting, stopped, back off.
    /// Returns whether it was still alive in the books (and so must be killed).
    pub fn fail(&mut self, id: &str, now: Instant) -> bool {
        let Some(worker) = self.worker_mut(id) else {
            return false;
        };
        if worker.state == WorkerState::Stopped {
            return false;
        }
        worker.state = WorkerState::Stopped;
        worker.accepting = false;
        let slot = worker.slot;
        self.record_slot_failure(slot, now);
        true
    }

    /// Records a failure of `slot`'s worker (or of a spawn into it) and schedules the respawn.
    pub fn record_slot_failure(&mut self, slot: usize, now: Instant) {
        let delay = self.rules.backoff.delay(self.slots[slot].failures);
        let slot = &mut self.slots[slot];
        slot.failures += 1;
        slot.not_before = now + delay;
    }

    /// Draining workers whose last request finished (or whose drain ran out of time), and
    /// workers marked for recycling after a hang: the monitor stops the first and kills the
    /// second.
    pub fn retiring(&self, drain_timeout: Duration) -> (Vec<String>, Vec<String>) {
        let drained = self
            .workers
            .iter()
            .filter(|w| {
                w.state == WorkerState::Draining
                    && (w.in_flight == 0
                        || w.draining_since
                            .is_some_and(|t| t.elapsed() >= drain_timeout))
            })
            .map(|w| w.id.clone())
            .collect();
        let hung = self
            .workers
            .iter()
            .filter(|w| w.recycle && w.state != WorkerState::Stopped)
            .map(|w| w.id.clone())
            .collect();
        (drained, hung)
    }

    /// A drained worker is stopped; only from `draining`. Returns whether it was.
    pub fn stop_drained(&mut self, id: &str) -> bool {
        let Some(worker) = self.worker_mut(id) else {
            return false;
        };
        if worker.state != WorkerState::Draining {
            return false;
        }
        worker.state = WorkerState::Stopped;
        if worker.rotation_due {
            self.rotations += 1;
        }
        true
    }

    /// A worker's process exited: it leaves the books. An exit nobody asked for (it was not
    /// draining or stopped) counts against its slot.
    pub fn on_exit(&mut self, id: &str, now: Instant) -> Option<Exit> {
        let index = self.workers.iter().position(|w| w.id == id)?;
        let worker = self.workers.remove(index);
        let expected = matches!(worker.state, WorkerState::Stopped | WorkerState::Draining);
        if !expected {
            self.record_slot_failure(worker.slot, now);
        }
        Some(Exit {
            pid: worker.pid,
            expected,
        })
    }

    /// Ids of every worker in the books, for the audit.
    pub fn ids(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.id.clone()).collect()
    }

    /// Drops a worker that has no process (the audit found it).
    pub fn forget(&mut self, id: &str) {
        self.workers.retain(|w| w.id != id);
    }

    /// Whether the monitor has nothing to watch but its schedules and events: every worker
    /// healthy and every active slot served, with no rotation or recycling due.
    pub fn settled(&self) -> bool {
        self.workers
            .iter()
            .all(|w| w.state == WorkerState::Healthy && w.is_primary())
            && self.slots.iter().enumerate().all(|(slot, s)| {
                !s.active
                    || self
                        .workers
                        .iter()
                        .any(|w| w.slot == slot && w.is_primary())
            })
    }

    /// Active slots with no primary worker whose backoff has elapsed: the monitor spawns for
    /// these.
    pub fn slots_to_fill(&self, now: Instant) -> Vec<usize> {
        if self.shutting_down {
            return Vec::new();
        }
        (0..self.slots.len())
            .filter(|&slot| {
                self.slots[slot].active
                    && self.slots[slot].not_before <= now
                    && !self
                        .workers
                        .iter()
                        .any(|w| w.slot == slot && w.is_primary())
            })
            .collect()
    }

    /// Ports held by any worker process that may still be alive.
    pub fn ports_in_use(&self) -> Vec<u16> {
        self.workers.iter().map(|w| w.port).collect()
    }

    /// Shutdown: no more spawns.
    pub fn shut_down(&mut self) {
        self.shutting_down = true;
    }

    /// Shutdown finished: every process is reaped.
    pub fn clear(&mut self) {
        self.workers.clear();
    }

    // ---- models ----

    /// Gives `model` `pool_size` active slots, reusing its inactive ones first.
    fn activate(&mut self, model: &str, pool_size: usize, now: Instant) {
        let mut wanted = pool_size.saturating_sub(self.active_slots(model));
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.model == model && !s.active)
        {
            if wanted == 0 {
                break;
            }
            *slot = Slot::new(model, slot.restarts, now);
            wanted -= 1;
        }
        for _ in 0..wanted {
            self.slots.push(Slot::new(model, 0, now));
        }
    }

    /// Stops spawning for `model` and drains its workers: each stops when its in-flight
    /// request is done, so an unload never cuts a request.
    pub fn deactivate(&mut self, model: &str, now: Instant) {
        for slot in self.slots.iter_mut().filter(|s| s.model == model) {
            slot.active = false;
        }
        for worker in self.workers.iter_mut().filter(|w| w.model == model) {
            if !matches!(worker.state, WorkerState::Stopped | WorkerState::Draining) {
                worker.start_draining(now);
            }
        }
    }

    pub fn active_slots(&self, model: &str) -> usize {
        self.slots
            .iter()
            .filter(|s| s.model == model && s.active)
            .count()
    }

    /// Healthy workers of `model`.
    pub fn healthy_of(&self, model: &str) -> usize {
        self.count(|w| w.model == model && w.state == WorkerState::Healthy)
    }

    /// Where `model` stands: cold (no slots), loading (slots, but a load is in progress or no
    /// worker is healthy yet), warm (serving).
    pub fn model_state(&self, model: &str) -> ModelState {
        if self.active_slots(model) == 0 {
            ModelState::Cold
        } else if self.models.get(model).is_some_and(|m| m.loads_waiting > 0)
            || self.healthy_of(model) == 0
        {
            ModelState::Loading
        } else {
            ModelState::Warm
        }
    }

    pub fn model_status(&self, model: &str) -> ModelStatus {
        ModelStatus {
            id: model.to_string(),
            state: self.model_state(model),
            workers: self.count(|w| w.model == model && w.is_primary()),
            last_used: self.models.get(model).and_then(|m| m.last_used),
        }
    }

    /// Notes that `model` served a request now (for LRU eviction and `/api/models`).
    fn touch(&mut self, model: &str) {
        self.models.entry(model.to_string()).or_default().last_used = Some(SystemTime::now());
    }

    /// Starts a load of `model`: gives it `pool_size` slots when it has none, evicting least
    /// recently used models (never the default one) so at most `cache_size` models have
    /// workers, and counts the load as waiting. The caller waits without the lock, then calls
    /// `end_load`. Returns the models it evicted.
    pub fn begin_load(
        &mut self,
        model: &str,
        pool_size: usize,
        cache_size: usize,
        now: Instant,
    ) -> Result<Vec<String>, ApiError> {
        let mut evicted = Vec::new();
        if self.active_slots(model) == 0 {
            evicted = self.make_room(model, cache_size, now)?;
            self.activate(model, pool_size, now);
        }
        self.models
            .entry(model.to_string())
            .or_default()
            .loads_waiting += 1;
        Ok(evicted)
    }

    /// A load of `model` stopped waiting. With no healthy worker and no other load waiting,
    /// the model goes back to cold. Returns how many of its workers are healthy.
    pub fn end_load(&mut self, model: &str, now: Instant) -> usize {
        let entry = self.models.entry(model.to_string()).or_default();
        entry.loads_waiting = entry.loads_waiting.saturating_sub(1);
        let others_waiting = entry.loads_waiting > 0;
        let healthy = self.healthy_of(model);
        if healthy == 0 && !others_waiting && model != self.default_model {
            self.deactivate(model, now);
        }
        healthy
    }

    /// Evicts least recently used models with workers until `model` fits in `cache_size`;
    /// returns the evicted ones.
    fn make_room(
        &mut self,
        model: &str,
        cache_size: usize,
        now: Instant,
    ) -> Result<Vec<String>, ApiError> {
        let mut evicted = Vec::new();
        loop {
            let mut loaded: Vec<(String, Option<SystemTime>)> = self
                .slots
                .iter()
                .filter(|s| s.active && s.model != model)
                .map(|s| s.model.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|m| {
                    let used = self.models.get(&m).and_then(|e| e.last_used);
                    (m, used)
                })
                .collect();
            if loaded.len() < cache_size {
                return Ok(evicted);
            }
            // Never used sorts first (None < Some), then oldest use.
            loaded.retain(|(m, _)| *m != self.default_model);
            let Some((victim, _)) = loaded.into_iter().min_by_key(|(_, used)| *used) else {
                return Err(ApiError::CapacityExceeded {
                    retry_after: Duration::from_secs(1),
                    reason: format!(
                        "inference.modelCacheSize ({cache_size}) is full and only the default model could be evicted"
                    ),
                });
            };
            self.deactivate(&victim, now);
            evicted.push(victim);
        }
    }

    // ---- views ----

    /// Every count and every worker, from this one critical section.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        Snapshot {
            workers: self
                .workers
                .iter()
                .map(|w| WorkerView {
                    id: w.id.clone(),
                    port: w.port,
                    pid: w.pid,
                    model: w.model.clone(),
                    state: w.state.as_str(),
                    accepting_requests: w.accepting && w.state == WorkerState::Healthy,
                    in_flight: w.in_flight,
                    request_count: w.request_count,
                    consecutive_failures: w.consecutive_failures,
                    restarts: self.slots.get(w.slot).map_or(0, |s| s.restarts),
                    uptime: now.duration_since(w.started_at).as_millis() as u64,
                })
                .collect(),
            healthy: self.healthy_count(),
            total: self.count(|w| w.state != WorkerState::Stopped),
            in_flight: self.in_flight(),
            queue_depth: self.queue_len(),
        }
    }

    /// The pool's gauges for `/metrics`.
    pub fn gauges(&self) -> PoolGauges {
        PoolGauges {
            workers: WorkerState::ALL
                .map(|s| (s.as_str(), self.count(|w| w.state == s)))
                .to_vec(),
            restarts: self.slots.iter().map(|s| s.restarts).sum(),
            rotations: self.rotations,
            in_flight: self.in_flight(),
            queue_depth: self.queue_len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        max_concurrent: usize::MAX,
        rotate_threshold: 100,
        backoff: Backoff {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        },
    };

    fn pool_with(rules: Rules, states: &[WorkerState]) -> PoolState {
        let now = Instant::now();
        let mut pool = PoolState::new("", states.len(), rules, now);
        for (slot, state) in states.iter().enumerate() {
            let id = pool.add_starting(slot, 40000 + slot as u16, 1);
            pool.worker_mut(&id).unwrap().state = *state;
        }
        pool
    }

    fn pool(states: &[WorkerState]) -> PoolState {
        pool_with(RULES, states)
    }

    fn state_of(p: &PoolState, slot: usize) -> WorkerState {
        p.workers.iter().find(|w| w.slot == slot).unwrap().state
    }

    #[test]
    fn take_idle_is_round_robin_over_healthy_idle_workers() {
        let mut p = pool(&[
            WorkerState::Healthy,
            WorkerState::Starting,
            WorkerState::Healthy,
        ]);
        let a = p.take_idle("").unwrap();
        let b = p.take_idle("").unwrap();
        assert_eq!((a.port, b.port), (40000, 40002));
        assert!(p.take_idle("").is_none(), "both healthy workers are busy");
        p.finish(&a, Outcome::Completed, Instant::now());
        assert_eq!(p.take_idle("").unwrap().port, 40000);
    }

    #[test]
    fn settled_only_when_every_worker_is_healthy_and_every_slot_served() {
        assert!(pool(&[WorkerState::Healthy, WorkerState::Healthy]).settled());
        assert!(!pool(&[WorkerState::Healthy, WorkerState::Starting]).settled());
        assert!(!pool(&[WorkerState::Unhealthy]).settled());
        let mut p = pool(&[WorkerState::Healthy]);
        let id = p.take_idle("").unwrap().worker_id;
        p.fail(&id, Instant::now());
        assert!(!p.settled(), "a failed worker's slot is to be filled");
    }

    #[test]
    fn take_idle_respects_the_model() {
        let mut p = pool(&[WorkerState::Healthy]);
        assert!(p.take_idle("base").is_none());
    }

    #[test]
    fn backoff_is_immediate_then_doubles_up_to_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        let delays: Vec<u128> = (0..6).map(|f| backoff.delay(f).as_millis()).collect();
        assert_eq!(delays, [0, 100, 200, 400, 500, 500]);
        assert_eq!(
            backoff.delay(200),
            backoff.max,
            "no overflow on a long crash loop"
        );
    }

    #[test]
    fn rotation_retires_at_once_when_another_worker_covers() {
        let rules = Rules {
            rotate_threshold: 1,
            ..RULES
        };
        let mut p = pool_with(rules, &[WorkerState::Healthy, WorkerState::Healthy]);
        let lease = p.take_idle("").unwrap();
        assert!(p.finish(&lease, Outcome::Completed, Instant::now()));
        let w0 = p.worker(&lease.worker_id).unwrap();
        assert!(w0.rotation_due && !w0.accepting);
        assert_eq!(w0.state, WorkerState::Draining);
        assert_eq!(
            p.slots_to_fill(Instant::now()),
            vec![0],
            "a replacement is due at once"
        );
        assert!(p.stop_drained(&lease.worker_id));
        assert_eq!(p.gauges().rotations, 1);
    }

    #[test]
    fn rotation_of_the_last_accepting_worker_waits_for_its_replacement() {
        let rules = Rules {
            rotate_threshold: 1,
            ..RULES
        };
        let mut p = pool_with(rules, &[WorkerState::Healthy]);
        let lease = p.take_idle("").unwrap();
        p.finish(&lease, Outcome::Completed, Instant::now());
        assert!(
            p.worker(&lease.worker_id).unwrap().accepting,
            "still serving: it is the only one"
        );
        assert_eq!(p.slots_to_fill(Instant::now()), vec![0]);
        let successor = p.add_starting(0, 40100, 2);
        assert!(p.slots_to_fill(Instant::now()).is_empty());
        assert!(p.on_healthy(&successor, Instant::now()));
        let old = p.worker(&lease.worker_id).unwrap();
        assert_eq!(old.state, WorkerState::Draining);
        assert!(!old.accepting);
    }

    #[test]
    fn crash_marks_unhealthy_and_hang_marks_for_recycling() {
        let mut p = pool(&[WorkerState::Healthy, WorkerState::Healthy]);
        let a = p.take_idle("").unwrap();
        let b = p.take_idle("").unwrap();
        p.finish(&a, Outcome::Crashed, Instant::now());
        p.finish(&b, Outcome::Hung, Instant::now());
        assert_eq!(state_of(&p, 0), WorkerState::Unhealthy);
        assert!(p.worker(&b.worker_id).unwrap().recycle);
        assert_eq!(
            p.slots_to_fill(Instant::now()),
            vec![1],
            "the hung worker's slot needs a new one"
        );
        assert_eq!(p.retiring(Duration::from_secs(1)).1, vec![b.worker_id]);
    }

    #[test]
    fn slot_failures_delay_the_respawn_and_healthy_resets_them() {
        let now = Instant::now();
        let mut p = pool(&[]);
        p.slots.push(Slot::new("", 0, now));
        p.record_slot_failure(0, now);
        assert_eq!(
            p.slots_to_fill(now),
            vec![0],
            "first failure: respawn at once"
        );
        p.record_slot_failure(0, now);
        assert!(
            p.slots_to_fill(now).is_empty(),
            "second failure: backing off"
        );
        assert_eq!(p.next_spawn_in("", now), RULES.backoff.base);
        let id = p.add_starting(0, 40009, 9);
        assert_eq!(
            p.slots[0].restarts, 1,
            "a spawn after a failure is a restart"
        );
        p.on_healthy(&id, now);
        assert_eq!(p.slots[0].failures, 0);
    }

    #[test]
    fn a_late_health_answer_does_not_revive_a_draining_worker() {
        let now = Instant::now();
        let mut p = pool(&[WorkerState::Starting]);
        let id = p.ids().remove(0);
        p.deactivate("", now);
        assert!(!p.on_healthy(&id, now), "draining stays draining");
        assert_eq!(state_of(&p, 0), WorkerState::Draining);
        assert_eq!(p.on_health_failure(&id), None);
        assert!(p.stop_drained(&id));
        assert!(!p.stop_drained(&id), "stopping twice is refused");
        assert_eq!(p.gauges().rotations, 0, "an unload drain is not a rotation");
    }

    #[test]
    fn exits_count_against_the_slot_only_when_unexpected() {
        let now = Instant::now();
        let mut p = pool(&[WorkerState::Healthy, WorkerState::Healthy]);
        let ids = p.ids();
        assert!(p.fail(&ids[0], now));
        assert!(!p.fail(&ids[0], now), "already stopped");
        assert!(p.on_exit(&ids[0], now).unwrap().expected);
        assert!(!p.on_exit(&ids[1], now).unwrap().expected);
        assert_eq!(p.slots[1].failures, 1);
        assert!(p.ids().is_empty());
    }

    #[test]
    fn loads_activate_slots_and_a_failed_load_goes_back_to_cold() {
        let now = Instant::now();
        let mut p = pool(&[WorkerState::Healthy]);
        p.begin_load("base", 2, 5, now).unwrap();
        assert_eq!((p.slots.len(), p.active_slots("base")), (3, 2));
        assert_eq!(p.model_state("base"), ModelState::Loading);
        assert_eq!(p.end_load("base", now), 0);
        assert_eq!(
            p.model_state("base"),
            ModelState::Cold,
            "no healthy worker came"
        );
        p.begin_load("base", 2, 5, now).unwrap();
        assert_eq!(p.slots.len(), 3, "inactive slots are reused");
        let id = p.add_starting(1, 40101, 3);
        p.on_healthy(&id, now);
        assert_eq!(p.end_load("base", now), 1);
        assert_eq!(p.model_state("base"), ModelState::Warm);
        p.deactivate("base", now);
        assert_eq!(p.model_state("base"), ModelState::Cold);
        assert!(
            p.slots_to_fill(now).is_empty(),
            "no spawns for an unloaded model"
        );
    }

    #[test]
    fn eviction_takes_the_least_recently_used_and_spares_the_default() {
        let now = Instant::now();
        let mut p = pool(&[WorkerState::Healthy]);
        p.begin_load("a", 1, 2, now).unwrap();
        let a = p.add_starting(1, 40101, 3);
        p.on_healthy(&a, now);
        assert_eq!(p.end_load("a", now), 1);
        p.begin_load("b", 1, 2, now).unwrap();
        assert_eq!(p.active_slots("a"), 0, "a was evicted for b");
        assert_eq!(p.model_state("a"), ModelState::Cold);
        assert_eq!(p.active_slots(""), 1, "the default model stays");
        assert!(matches!(
            p.begin_load("c", 1, 1, now),
            Err(ApiError::CapacityExceeded { .. })
        ));
    }

    #[test]
    fn the_global_cap_limits_inferences_across_models() {
        let rules = Rules {
            max_concurrent: 1,
            ..RULES
        };
        let mut p = pool_with(rules, &[WorkerState::Healthy, WorkerState::Healthy]);
        assert!(p.take_idle("").is_some());
        assert!(
            p.take_idle("").is_none(),
            "an idle worker, but the cap is reached"
        );
    }

    #[test]
    fn live_worker_check_ignores_the_dead() {
        let p = pool(&[WorkerState::Stopped, WorkerState::Unhealthy]);
        assert!(!p.has_live_worker(""));
        let p = pool(&[WorkerState::Starting]);
        assert!(p.has_live_worker(""));
    }

    #[test]
    fn the_snapshot_counts_agree_with_its_list() {
        let p = pool(&[
            WorkerState::Healthy,
            WorkerState::Stopped,
            WorkerState::Unhealthy,
        ]);
        let s = p.snapshot(Instant::now());
        assert_eq!((s.healthy, s.total), (1, 2));
        assert_eq!(s.workers.len(), 3);
    }
}
