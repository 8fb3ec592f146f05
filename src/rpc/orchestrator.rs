//! Registration with an orchestrator: `POST {orchestratorUrl}/api/workers/register` at start and
//! every `rack.heartbeatMs`, so the orchestrator knows this worker, its warm models and its
//! capacity. An orchestrator that fails only costs a log line and a retry with backoff.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::json;

use crate::engine::Engine;

/// First retry after a failed registration; doubles up to the heartbeat interval times
/// `MAX_BACKOFF_FACTOR`, so a long outage costs a log line every few minutes, not a flood.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_BACKOFF_FACTOR: u32 = 6;

/// A registration may take this long before it counts as failed.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Registers now and then every `heartbeat` until `stop` receives (or is dropped).
pub fn start(
    engine: Arc<Engine>,
    url: String,
    worker_id: String,
    address: String,
    heartbeat: Duration,
    stop: Receiver<()>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("orchestrator".into())
        .spawn(move || {
            let endpoint = format!("{}/api/workers/register", url.trim_end_matches('/'));
            let max_backoff = heartbeat * MAX_BACKOFF_FACTOR;
            let mut retry = FIRST_RETRY;
            let mut registered = false;
            loop {
                let wait = match register(&engine, &endpoint, &worker_id, &address) {
                    Ok(()) => {
                        if !registered {
                            log::info!(
                                "registered with the orchestrator at {endpoint} as {worker_id}"
                            );
                        }
                        registered = true;
                        retry = FIRST_RETRY;
                        heartbeat
                    }
                    Err(why) => {
                        log::warn!(
                            "orchestrator registration failed ({why}); retrying in {} ms",
                            retry.as_millis()
                        );
                        registered = false;
                        let wait = retry;
                        retry = (retry * 2).min(max_backoff);
                        wait
                    }
                };
                match stop.recv_timeout(wait) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        })
}

/// Why a registration failed.
#[derive(Debug)]
enum RegisterError {
    /// No answer: the orchestrator is down or unreachable.
    Unreachable(ureq::Error),
    /// It answered with a status other than 2xx.
    Refused(u16),
}

impl std::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegisterError::Unreachable(e) => write!(f, "{e}"),
            RegisterError::Refused(status) => write!(f, "the orchestrator answered {status}"),
        }
    }
}

fn register(
    engine: &Engine,
    endpoint: &str,
    worker_id: &str,
    address: &str,
) -> Result<(), RegisterError> {
    let body = json!({
        "workerId": worker_id,
        "address": address,
        "capabilities": {
            "models": engine.pool.warm_models(),
            "capacity": { "maxConcurrent": engine.settings.inference.max_concurrent_inferences },
        },
    });
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(REGISTER_TIMEOUT))
            .http_status_as_error(false)
            .build(),
    );
    let response = agent
        .post(endpoint)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map_err(RegisterError::Unreachable)?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(RegisterError::Refused(status))
    }
}
