//! A request's side of the pool (README "Behaviour under failure"): wait for an idle healthy
//! worker in a bounded FIFO queue, send the inference, and retry once on another worker when
//! the first one dies under the request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::client::{self, CallError, InferenceForm, WorkerReply};
use super::state::{Lease, Outcome};
use super::Pool;
use crate::error::ApiError;

/// How often a queued request re-checks the pool even without a wake-up, so a pool that died
/// while it waited is noticed and reported instead of waiting out the whole timeout.
const QUEUE_RECHECK: Duration = Duration::from_millis(250);

/// After a worker's 5xx, how long its `/health` gets to prove it is still alive (which makes
/// the 5xx the worker's verdict on the audio rather than a crash).
const CRASH_PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// When a request must be answered, and what running out of time means for its worker
/// (README "Behaviour under failure").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// The answer is due: the request gives up then.
    pub at: Instant,
    /// Whether the client chose `at` (an `options.timeout` shorter than the server's): when it
    /// passes, the connection to the worker is closed, which makes whisper-server abort the
    /// inference, and the worker stays. Otherwise the worker overran the deadline the server
    /// gave it and is recycled, as whisper-server hangs like that with `/health` fine.
    pub client_chosen: bool,
    /// No worker is leased after this: a request with almost no time left would only waste
    /// the worker (and, on the server's deadline, get a healthy one recycled).
    pub lease_by: Instant,
    /// The worker's time for this call, counted from its lease, when the call has its own
    /// (a chunk of a recording: `audio.chunkTimeoutFactor`); then `at` bounds only the wait.
    pub per_call: Option<Duration>,
    /// Waits past `inference.queueTimeoutMs` (up to `lease_by`): a later chunk of a recording
    /// that is under way waits for its turn rather than failing the whole recording.
    pub patient: bool,
}

impl Deadline {
    /// The server's deadline and the client's shorter one, if any, for a request that reached
    /// the engine at `started`. A worker is leased only while at least a quarter of the time
    /// the request had then is left.
    pub fn new(server: Instant, client: Option<Instant>, started: Instant) -> Deadline {
        let client = client.filter(|c| *c < server);
        let at = client.unwrap_or(server);
        let budget = at.saturating_duration_since(started);
        Deadline {
            at,
            client_chosen: client.is_some(),
            lease_by: at - budget / 4,
            per_call: None,
            patient: false,
        }
    }

    /// A call that may wait for a worker until `wait_until` and then has `inference` to run,
    /// from its lease: a chunk of a recording, whose deadline fits its length.
    pub fn per_call(wait_until: Instant, inference: Duration, patient: bool) -> Deadline {
        Deadline {
            at: wait_until,
            client_chosen: false,
            lease_by: wait_until,
            per_call: Some(inference),
            patient,
        }
    }

    /// How long the worker has for the call, from now (its lease).
    fn for_call(&self) -> Duration {
        self.per_call
            .unwrap_or_else(|| self.at.saturating_duration_since(Instant::now()))
    }
}

/// One request's turn in the queue, however many calls (chunks) it makes: waiting calls take
/// workers group by group, the group served longest ago first. Forgotten on drop.
pub struct Group<'p> {
    pool: &'p Pool,
    id: u64,
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        self.pool.lock().end_group(self.id);
    }
}

/// The answer of a worker, with who gave it (for the response `metadata`).
#[derive(Debug)]
pub struct Served {
    pub reply: WorkerReply,
    pub worker_id: String,
    pub port: u16,
}

impl Pool {
    /// A new request's turn in the queue.
    pub fn group(&self) -> Group<'_> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Group {
            pool: self,
            id: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Waits until an idle healthy worker of `model` is free and leases it: the waiting
    /// requests take turns (`PoolState::is_next`), at most `maxQueue` requests wait in all,
    /// each call at most `queueTimeoutMs` or until `lease_by` (then 504: too little time is
    /// left to run it). Waiters for different models do not block each other; the global cap
    /// of `maxConcurrentInferences` applies to all.
    fn acquire(&self, model: &str, deadline: &Deadline, group: u64) -> Result<Lease, ApiError> {
        let lease_by = deadline.lease_by;
        let mut state = self.lock();
        if Instant::now() >= lease_by {
            return Err(out_of_time());
        }
        if !state.has_waiting(model) {
            if let Some(lease) = state.take_idle(model) {
                state.served(group);
                return Ok(lease);
            }
        }
        if !state.has_live_worker(model) {
            return Err(ApiError::NoHealthyWorkers {
                retry_after: state.next_spawn_in(model, Instant::now()),
            });
        }
        if state.queue_len() >= self.config.max_queue && !state.group_is_waiting(group) {
            return Err(ApiError::CapacityExceeded {
                retry_after: Duration::from_secs(1),
                reason: format!(
                    "all workers are busy and {} requests are queued",
                    state.queue_len()
                ),
            });
        }
        let (ticket, wake) = state.enqueue(model, group);
        let queue_give_up = if deadline.patient {
            lease_by
        } else {
            Instant::now() + self.config.queue_timeout
        };
        let give_up_at = lease_by.min(queue_give_up);
        loop {
            if state.is_next(ticket, model) {
                if let Some(lease) = state.take_idle(model) {
                    state.dequeue(ticket);
                    state.served(group);
                    // The next in line may find another idle worker.
                    let wake = state.next_to_wake();
                    drop(state);
                    wake.notify();
                    return Ok(lease);
                }
            }
            let now = Instant::now();
            let dead = !state.has_live_worker(model);
            if now >= give_up_at || dead {
                state.dequeue(ticket);
                let error = if dead {
                    ApiError::NoHealthyWorkers {
                        retry_after: state.next_spawn_in(model, now),
                    }
                } else if lease_by < queue_give_up {
                    out_of_time()
                } else {
                    ApiError::CapacityExceeded {
                        retry_after: Duration::from_secs(1),
                        reason: format!(
                            "no worker became free within {} ms",
                            self.config.queue_timeout.as_millis()
                        ),
                    }
                };
                let wake = state.next_to_wake();
                drop(state);
                wake.notify();
                return Err(error);
            }
            let wait = give_up_at.saturating_duration_since(now).min(QUEUE_RECHECK);
            state = wake
                .wait_timeout(state, wait)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Returns a leased worker and wakes whoever can use what changed.
    fn release(&self, lease: &Lease, outcome: Outcome) {
        let (needs_monitor, wake) = {
            let mut state = self.lock();
            let needs_monitor = state.finish(lease, outcome, Instant::now());
            (needs_monitor, state.next_to_wake())
        };
        wake.notify();
        if needs_monitor {
            self.notify_changed();
            self.wake_monitor();
        }
    }

    /// Runs one inference on the pool. A worker that dies under the request (connection
    /// refused or cut, or a 5xx after which its `/health` fails) is reported to the monitor
    /// and the request is sent once more to another worker. A connection that fails while the
    /// worker still answers `/health` was a stale pooled one: the request is sent once more,
    /// and the worker keeps its standing.
    pub fn infer(
        &self,
        model: &str,
        form: &InferenceForm,
        deadline: Deadline,
        group: &Group,
    ) -> Result<Served, ApiError> {
        let mut last_failure = String::new();
        for attempt in 1..=2 {
            let lease = self.acquire(model, &deadline, group.id)?;
            let remaining = deadline.for_call();
            match client::inference(lease.port, form, remaining) {
                Ok(reply) if reply.status < 500 => {
                    self.release(&lease, Outcome::Completed);
                    return answer(reply, lease);
                }
                Ok(reply) if client::health(lease.port, CRASH_PROBE_TIMEOUT).is_ok() => {
                    // Alive and failing: the worker's own verdict, not a crash. Not retried.
                    self.release(&lease, Outcome::Completed);
                    return Err(ApiError::WorkerError(format!(
                        "{} answered {}: {}",
                        lease.worker_id,
                        reply.status,
                        snippet(&reply.body)
                    )));
                }
                Ok(reply) => {
                    last_failure = format!(
                        "{} answered {} and then stopped answering",
                        lease.worker_id, reply.status
                    )
                }
                Err(CallError::Timeout) if deadline.client_chosen => {
                    log::info!(
                        "{}: the client's deadline passed; the inference was cancelled and the worker stays",
                        lease.worker_id
                    );
                    self.release(&lease, Outcome::Cancelled);
                    return Err(ApiError::Timeout(
                        "no transcript within the request's options.timeout; the inference was cancelled"
                            .into(),
                    ));
                }
                Err(CallError::Timeout) => {
                    log::warn!(
                        "{} did not answer within the deadline; recycling it",
                        lease.worker_id
                    );
                    self.release(&lease, Outcome::Hung);
                    return Err(ApiError::Timeout(format!(
                        "{} gave no transcript within the request deadline",
                        lease.worker_id
                    )));
                }
                Err(CallError::Connection(why))
                    if client::health(lease.port, CRASH_PROBE_TIMEOUT).is_ok() =>
                {
                    // The worker is fine: the pooled connection was stale. Send it again.
                    log::debug!(
                        "{} dropped a connection but is healthy ({why}); sending again",
                        lease.worker_id
                    );
                    last_failure = format!("{}: {why}", lease.worker_id);
                    self.release(&lease, Outcome::Interrupted);
                    continue;
                }
                Err(why) => last_failure = format!("{}: {why}", lease.worker_id),
            }
            log::warn!("request failed on a dying worker (attempt {attempt}/2): {last_failure}");
            self.release(&lease, Outcome::Crashed);
        }
        Err(ApiError::WorkerError(format!(
            "two workers failed in a row; last: {last_failure}"
        )))
    }
}

/// A request whose deadline is too near to lease a worker for it.
fn out_of_time() -> ApiError {
    ApiError::Timeout(
        "too little of the request's deadline was left to run it once a worker was free".into(),
    )
}

/// A 2xx becomes the answer; a 4xx is the worker refusing the audio and goes back to the
/// client as 422 (whisper-server's 400 bodies are plain text such as `Invalid request`).
fn answer(reply: WorkerReply, lease: Lease) -> Result<Served, ApiError> {
    if (400..500).contains(&reply.status) {
        return Err(ApiError::WorkerRejected(snippet(&reply.body)));
    }
    Ok(Served {
        reply,
        worker_id: lease.worker_id,
        port: lease.port,
    })
}

/// The start of a worker's error body, for a message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let text = text.trim();
    if text.is_empty() {
        "(empty body)".to_string()
    } else {
        text.to_string()
    }
}
