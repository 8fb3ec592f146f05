//! `PoolState`: everything the request threads and the monitor share, behind one mutex.
//!
//! The methods here are pure bookkeeping on the data; they never do I/O, so the lock is held
//! for microseconds. Processes, sockets and sleeps live in `monitor.rs` and `dispatch.rs`,
//! which take the lock in short blocks around this logic.

use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;
use std::time::{Duration, Instant};

/// The life of one worker process (SPEC section 4).
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
}

#[derive(Debug, Clone)]
pub struct Worker {
    /// `worker-<port>-<n>`: the port for the operator, `n` so a respawn on the same port has a
    /// new id.
    pub id: String,
    /// The pool slot this worker fills; a slot is respawned with backoff when its worker fails.
    pub slot: usize,
    pub port: u16,
    pub pid: u32,
    /// Model id from the settings, or "" for whatever `whisperServer.args` load.
    pub model: String,
    pub state: WorkerState,
    /// `false` once the worker is retiring (rotation or recycling): no new requests.
    pub accepting: bool,
    /// Requests being served right now; whisper-server does one inference at a time, so 0 or 1.
    pub in_flight: usize,
    /// Requests completed by this process; drives rotation.
    pub request_count: u64,
    /// Consecutive failed health checks.
    pub consecutive_failures: u32,
    /// Reached `rotateThreshold`: replaced as soon as that keeps capacity above zero.
    pub rotation_due: bool,
    /// Its inference passed the deadline: whisper-server hangs like that with `/health` fine,
    /// so it is killed and replaced, not trusted again.
    pub recycle: bool,
    pub started_at: Instant,
    /// When it entered `Draining`, for `drainTimeoutMs`.
    pub draining_since: Option<Instant>,
}

impl Worker {
    /// A freshly spawned worker, not yet answering `/health`.
    pub fn starting(id: String, slot: usize, port: u16, pid: u32, model: String) -> Worker {
        Worker {
            id,
            slot,
            port,
            pid,
            model,
            state: WorkerState::Starting,
            accepting: true,
            in_flight: 0,
            request_count: 0,
            consecutive_failures: 0,
            rotation_due: false,
            recycle: false,
            started_at: Instant::now(),
            draining_since: None,
        }
    }

    /// Counts toward its slot's capacity: alive, not on its way out.
    pub fn is_primary(&self) -> bool {
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
}

/// One place in the pool: `poolSize` of them per served model.
#[derive(Debug, Clone)]
pub struct Slot {
    pub model: String,
    /// `false` once its model is unloaded: no more spawns. Kept for reuse when the model is
    /// loaded again, so slots stay bounded by the largest pool a model ever had.
    pub active: bool,
    /// Consecutive failures of this slot's workers (crash, failed start, health, hang); reset
    /// when one of its workers turns healthy. Drives the backoff.
    pub failures: u32,
    /// Respawns after a failure, for `/api/v1/status`.
    pub restarts: u64,
    /// Earliest time the next worker of this slot may be spawned.
    pub not_before: Instant,
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

/// The model manager's notes about one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelEntry {
    /// A `load` is waiting for this model's workers.
    pub loading: bool,
    /// The last request it served; drives LRU eviction.
    pub last_used: Option<SystemTime>,
}

/// A worker handed to one request; give it back with `PoolState::finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub worker_id: String,
    pub port: u16,
}

#[derive(Debug)]
pub struct PoolState {
    pub workers: Vec<Worker>,
    pub slots: Vec<Slot>,
    /// Requests waiting for an idle worker, oldest first: (ticket, model).
    pub queue: VecDeque<(u64, String)>,
    /// Inferences allowed at once across all models and routes
    /// (`inference.maxConcurrentInferences`).
    pub max_concurrent: usize,
    /// Per model id: what the model manager tracks (load in progress, last use).
    pub models: BTreeMap<String, ModelEntry>,
    /// Next ticket number; tickets only need to be unique while queued.
    pub next_ticket: u64,
    /// Where the round-robin scan for an idle worker starts next time.
    pub rr_cursor: usize,
    /// Spawn counter for worker ids.
    pub spawn_seq: u64,
    /// Workers replaced after reaching `rotateThreshold`, for metrics and the log.
    pub rotations: u64,
    /// Set at shutdown: no more spawns.
    pub shutting_down: bool,
}

impl PoolState {
    /// `pool_size` slots for `model`, all due to spawn now.
    pub fn new(model: &str, pool_size: usize, now: Instant) -> Self {
        let slots = (0..pool_size)
            .map(|_| Slot {
                model: model.to_string(),
                active: true,
                failures: 0,
                restarts: 0,
                not_before: now,
            })
            .collect();
        PoolState {
            workers: Vec::new(),
            slots,
            queue: VecDeque::new(),
            max_concurrent: usize::MAX,
            models: BTreeMap::new(),
            next_ticket: 0,
            rr_cursor: 0,
            spawn_seq: 0,
            rotations: 0,
            shutting_down: false,
        }
    }

    pub fn worker(&self, id: &str) -> Option<&Worker> {
        self.workers.iter().find(|w| w.id == id)
    }

    pub fn worker_mut(&mut self, id: &str) -> Option<&mut Worker> {
        self.workers.iter_mut().find(|w| w.id == id)
    }

    pub fn healthy_count(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.state == WorkerState::Healthy)
            .count()
    }

    /// Workers that are alive and not retired, i.e. the pool as the operator sees it.
    pub fn live_count(&self) -> usize {
        self.workers
            .iter()
            .filter(|w| w.state != WorkerState::Stopped)
            .count()
    }

    /// Inferences running now, all models.
    pub fn in_flight(&self) -> usize {
        self.workers.iter().map(|w| w.in_flight).sum()
    }

    /// Takes the next idle healthy worker for `model`, round-robin, and marks it busy; none
    /// while `max_concurrent` inferences are already running.
    pub fn take_idle(&mut self, model: &str) -> Option<Lease> {
        if self.in_flight() >= self.max_concurrent {
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

    /// Gives a leased worker back and applies what the request learned about it.
    pub fn finish(&mut self, lease: &Lease, outcome: Outcome, rotate_threshold: u64, now: Instant) {
        let Some(worker) = self.worker_mut(&lease.worker_id) else {
            return;
        };
        worker.in_flight = worker.in_flight.saturating_sub(1);
        match outcome {
            Outcome::Completed => {
                worker.request_count += 1;
                if worker.request_count >= rotate_threshold && !worker.rotation_due {
                    worker.rotation_due = true;
                    let (id, model) = (worker.id.clone(), worker.model.clone());
                    self.retire_if_covered(&id, &model, now);
                }
            }
            Outcome::Crashed => {
                if worker.state == WorkerState::Healthy {
                    worker.state = WorkerState::Unhealthy;
                }
            }
            Outcome::Hung => {
                worker.recycle = true;
                worker.accepting = false;
            }
            Outcome::Interrupted => {}
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
                start_draining(worker, now);
            }
        }
    }

    /// Called when a worker turned healthy: its slot is no longer failing, and the workers it
    /// replaces can drain.
    pub fn on_healthy(&mut self, id: &str, now: Instant) {
        let Some(worker) = self.worker_mut(id) else {
            return;
        };
        let was_starting = worker.state == WorkerState::Starting;
        worker.state = WorkerState::Healthy;
        worker.consecutive_failures = 0;
        let slot = worker.slot;
        if !was_starting {
            return;
        }
        self.slots[slot].failures = 0;
        for predecessor in self
            .workers
            .iter_mut()
            .filter(|w| w.slot == slot && w.id != id && w.rotation_due)
        {
            if predecessor.state != WorkerState::Stopped {
                start_draining(predecessor, now);
            }
        }
    }

    /// Records a failure of `slot`'s worker and schedules the respawn: at once after the first
    /// failure, then `min(max, base * 2^(failures-1))` while it keeps failing.
    pub fn record_slot_failure(
        &mut self,
        slot: usize,
        base: Duration,
        max: Duration,
        now: Instant,
    ) {
        let slot = &mut self.slots[slot];
        let delay = backoff_delay(slot.failures, base, max);
        slot.failures += 1;
        slot.not_before = now + delay;
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

    /// Gives `model` `pool_size` active slots, reusing its inactive ones first.
    pub fn activate(&mut self, model: &str, pool_size: usize, now: Instant) {
        let mut wanted = pool_size.saturating_sub(self.active_slots(model));
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.model == model && !s.active)
        {
            if wanted == 0 {
                break;
            }
            *slot = Slot {
                model: model.to_string(),
                active: true,
                failures: 0,
                restarts: slot.restarts,
                not_before: now,
            };
            wanted -= 1;
        }
        for _ in 0..wanted {
            self.slots.push(Slot {
                model: model.to_string(),
                active: true,
                failures: 0,
                restarts: 0,
                not_before: now,
            });
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
                start_draining(worker, now);
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
        self.workers
            .iter()
            .filter(|w| w.model == model && w.state == WorkerState::Healthy)
            .count()
    }

    /// Where `model` stands: cold (no slots), loading (slots, but a load is in progress or no
    /// worker is healthy yet), warm (serving).
    pub fn model_state(&self, model: &str) -> ModelState {
        if self.active_slots(model) == 0 {
            ModelState::Cold
        } else if self.models.get(model).is_some_and(|m| m.loading) || self.healthy_of(model) == 0 {
            ModelState::Loading
        } else {
            ModelState::Warm
        }
    }

    /// Notes that `model` served a request now (for LRU eviction and `/api/models`).
    pub fn touch(&mut self, model: &str) {
        self.models.entry(model.to_string()).or_default().last_used = Some(SystemTime::now());
    }

    pub fn remove(&mut self, id: &str) -> Option<Worker> {
        let index = self.workers.iter().position(|w| w.id == id)?;
        Some(self.workers.remove(index))
    }
}

fn start_draining(worker: &mut Worker, now: Instant) {
    worker.accepting = false;
    worker.state = WorkerState::Draining;
    worker.draining_since = Some(now);
}

/// Delay before the respawn that follows `failures_so_far` consecutive failures.
pub fn backoff_delay(failures_so_far: u32, base: Duration, max: Duration) -> Duration {
    if failures_so_far == 0 {
        return Duration::ZERO;
    }
    let factor = 1u32.checked_shl(failures_so_far - 1).unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(max).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(id: &str, slot: usize, state: WorkerState) -> Worker {
        let mut worker = Worker::starting(id.into(), slot, 40000 + slot as u16, 1, String::new());
        worker.state = state;
        worker
    }

    fn pool(states: &[WorkerState]) -> PoolState {
        let mut pool = PoolState::new("", states.len(), Instant::now());
        pool.workers = states
            .iter()
            .enumerate()
            .map(|(i, s)| worker(&format!("w{i}"), i, *s))
            .collect();
        pool
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
        assert_eq!((a.worker_id.as_str(), b.worker_id.as_str()), ("w0", "w2"));
        assert!(p.take_idle("").is_none(), "both healthy workers are busy");
        p.finish(&a, Outcome::Completed, 100, Instant::now());
        assert_eq!(p.take_idle("").unwrap().worker_id, "w0");
    }

    #[test]
    fn take_idle_respects_the_model() {
        let mut p = pool(&[WorkerState::Healthy]);
        assert!(p.take_idle("base").is_none());
    }

    #[test]
    fn backoff_is_immediate_then_doubles_up_to_the_cap() {
        let (base, max) = (Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u128> = (0..6)
            .map(|f| backoff_delay(f, base, max).as_millis())
            .collect();
        assert_eq!(delays, [0, 100, 200, 400, 500, 500]);
        assert_eq!(
            backoff_delay(200, base, max),
            max,
            "no overflow on a long crash loop"
        );
    }

    #[test]
    fn rotation_retires_at_once_when_another_worker_covers() {
        let mut p = pool(&[WorkerState::Healthy, WorkerState::Healthy]);
        let lease = p.take_idle("").unwrap();
        p.finish(&lease, Outcome::Completed, 1, Instant::now());
        let w0 = p.worker("w0").unwrap();
        assert!(w0.rotation_due && !w0.accepting);
        assert_eq!(w0.state, WorkerState::Draining);
        assert_eq!(
            p.slots_to_fill(Instant::now()),
            vec![0],
            "a replacement is due at once"
        );
    }

    #[test]
    fn rotation_of_the_last_accepting_worker_waits_for_its_replacement() {
        let mut p = pool(&[WorkerState::Healthy]);
        let lease = p.take_idle("").unwrap();
        p.finish(&lease, Outcome::Completed, 1, Instant::now());
        assert!(
            p.worker("w0").unwrap().accepting,
            "still serving: it is the only one"
        );
        assert_eq!(p.slots_to_fill(Instant::now()), vec![0]);
        p.workers.push(worker("w1", 0, WorkerState::Starting));
        assert!(p.slots_to_fill(Instant::now()).is_empty());
        p.on_healthy("w1", Instant::now());
        assert_eq!(p.worker("w0").unwrap().state, WorkerState::Draining);
        assert!(!p.worker("w0").unwrap().accepting);
    }

    #[test]
    fn crash_marks_unhealthy_and_hang_marks_for_recycling() {
        let mut p = pool(&[WorkerState::Healthy, WorkerState::Healthy]);
        let a = p.take_idle("").unwrap();
        let b = p.take_idle("").unwrap();
        p.finish(&a, Outcome::Crashed, 100, Instant::now());
        p.finish(&b, Outcome::Hung, 100, Instant::now());
        assert_eq!(p.worker("w0").unwrap().state, WorkerState::Unhealthy);
        assert!(p.worker("w1").unwrap().recycle);
        assert_eq!(
            p.slots_to_fill(Instant::now()),
            vec![1],
            "the hung worker's slot needs a new one"
        );
    }

    #[test]
    fn slot_failures_delay_the_respawn_and_healthy_resets_them() {
        let now = Instant::now();
        let mut p = pool(&[]);
        p.slots.push(Slot {
            model: String::new(),
            active: true,
            failures: 0,
            restarts: 0,
            not_before: now,
        });
        let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
        p.record_slot_failure(0, base, max, now);
        assert_eq!(
            p.slots_to_fill(now),
            vec![0],
            "first failure: respawn at once"
        );
        p.record_slot_failure(0, base, max, now);
        assert!(
            p.slots_to_fill(now).is_empty(),
            "second failure: backing off"
        );
        assert_eq!(p.next_spawn_in("", now), base);
        p.workers.push(worker("w9", 0, WorkerState::Starting));
        p.on_healthy("w9", now);
        assert_eq!(p.slots[0].failures, 0);
    }

    #[test]
    fn activate_reuses_slots_and_deactivate_drains() {
        let now = Instant::now();
        let mut p = pool(&[WorkerState::Healthy]);
        p.activate("base", 2, now);
        assert_eq!((p.slots.len(), p.active_slots("base")), (3, 2));
        assert_eq!(
            p.model_state("base"),
            ModelState::Loading,
            "no healthy worker yet"
        );
        let mut w = worker("b1", 1, WorkerState::Healthy);
        w.model = "base".into();
        p.workers.push(w);
        assert_eq!(p.model_state("base"), ModelState::Warm);
        p.deactivate("base", now);
        assert_eq!(p.model_state("base"), ModelState::Cold);
        assert_eq!(p.worker("b1").unwrap().state, WorkerState::Draining);
        assert!(
            p.slots_to_fill(now).is_empty(),
            "no spawns for an unloaded model"
        );
        p.activate("base", 2, now);
        assert_eq!(p.slots.len(), 3, "inactive slots are reused");
    }

    #[test]
    fn the_global_cap_limits_inferences_across_models() {
        let mut p = pool(&[WorkerState::Healthy, WorkerState::Healthy]);
        p.max_concurrent = 1;
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
}
