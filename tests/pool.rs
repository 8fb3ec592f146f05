//! Supervision and routing (README "Behaviour under failure"): killed workers are replaced
//! without a client noticing, rotation loses nothing, backoff backs off, hung and unhealthy
//! workers are recycled, the queue is bounded.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

/// Sends `count` transcriptions from `clients` threads; returns (status, text, audio) triples.
fn load(manager: &Manager, clients: usize, count: usize) -> Vec<(u16, Value, Vec<u8>)> {
    spread(clients, count, |i| {
        let audio = wav(800 + i as u32, i as u16);
        let reply = manager.transcribe(&audio);
        (reply.status, reply.json(), audio)
    })
}

/// Every request succeeded with the transcript of its own audio.
fn assert_all_correct(results: &[(u16, Value, Vec<u8>)]) {
    for (status, body, audio) in results {
        assert_eq!(*status, 200, "{body}");
        assert_eq!(
            body["result"]["text"],
            stub_text(audio),
            "a transcript of some other request"
        );
    }
}

#[test]
fn a_sigkilled_worker_is_replaced_and_requests_keep_succeeding() {
    let manager = Setup::new().stub(&["--delay-ms", "40"]).start();
    let before = manager.wait_healthy(2);
    let victims: Vec<u32> = std::thread::scope(|scope| {
        // Traffic flows while a worker is killed, the pool made whole, another killed...
        let traffic = Background::spawn(scope, |stop| {
            let mut sent = 0;
            while !stop.requested() {
                let audio = wav(1000, sent);
                let reply = manager.transcribe(&audio);
                assert_eq!(
                    reply.status,
                    200,
                    "a client saw an error while a worker was healthy: {}",
                    reply.text()
                );
                assert_eq!(reply.json()["result"]["text"], stub_text(&audio));
                sent += 1;
            }
        });
        let mut victims = Vec::new();
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            let pid = manager.worker_pids()[0];
            signal(pid, "KILL");
            victims.push(pid);
            manager.wait_healthy(2);
        }
        traffic.finish();
        victims
    });
    let after = manager.wait_healthy(2);
    for pid in victims {
        assert!(!alive(pid), "killed worker {pid} still there");
    }
    let restarts: u64 = workers(&after)
        .iter()
        .map(|w| w["restarts"].as_u64().unwrap())
        .sum();
    assert!(restarts >= 1, "{after}");
    assert_ne!(before["workers"], after["workers"]);
    // The operator is told where to look for why.
    assert!(
        manager.wait_log("exited unexpectedly: signal: 9 (SIGKILL); its output is in "),
        "{}",
        manager.log_text()
    );
    assert!(manager.log_text().contains("logs/workers/worker-"));
}

#[test]
fn a_worker_killed_mid_request_is_retried_on_another() {
    let manager = Setup::new().stub(&["--delay-ms", "1500"]).start();
    manager.wait_healthy(2);
    let audio = wav(2000, 9);
    std::thread::scope(|scope| {
        let request = scope.spawn(|| manager.transcribe(&audio));
        // Find the worker serving the request and kill it under the request.
        let busy = manager.busy_worker();
        signal(pid_of(&busy), "KILL");
        let reply = request.join().unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let body = reply.json();
        assert_eq!(body["result"]["text"], stub_text(&audio));
        assert_ne!(
            body["result"]["metadata"]["worker_id"], busy["id"],
            "answered by the other worker"
        );
    });
    assert!(manager.wait_log("attempt 1/2"), "the retry is logged");
}

#[test]
fn rotation_under_steady_traffic_loses_nothing() {
    let manager = Setup::new()
        .set("workers", "rotateThreshold", json!(4))
        .stub(&["--delay-ms", "20"])
        .start();
    let first = manager.wait_healthy(2);
    let results = load(&manager, 3, 60);
    assert_eq!(results.len(), 60);
    assert_all_correct(&results);
    let status = manager.wait_healthy(2);
    let ids: Vec<&str> = workers(&status)
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    for old in workers(&first) {
        assert!(
            !ids.contains(&old["id"].as_str().unwrap()),
            "{old} was never rotated"
        );
        assert!(!alive(pid_of(old)), "a rotated worker is still running");
    }
    // 60 requests over workers that retire after 4: many generations.
    let generation: u64 = ids
        .iter()
        .map(|id| id.rsplit('-').next().unwrap().parse::<u64>().unwrap())
        .max()
        .unwrap();
    assert!(generation >= 10, "{ids:?}");
    // The last rotations may still be draining when the load ends.
    let drained = wait_for(SOON, || {
        (manager.log_text().matches("drained; stopping it").count() >= 8).then_some(())
    });
    assert!(drained.is_some(), "{}", manager.log_text());
}

#[test]
fn rotation_never_runs_two_workers_on_one_port() {
    let manager = Setup::new()
        .set("workers", "rotateThreshold", json!(2))
        .pool(1)
        .start();
    manager.wait_healthy(1);
    std::thread::scope(|scope| {
        let watch = Background::spawn(scope, |stop| {
            while !stop.requested() {
                let status = manager.status();
                let mut ports: Vec<u64> = workers(&status)
                    .iter()
                    .map(|w| w["port"].as_u64().unwrap())
                    .collect();
                let count = ports.len();
                ports.sort_unstable();
                ports.dedup();
                assert_eq!(ports.len(), count, "two workers on one port: {status}");
            }
        });
        for i in 0..30 {
            let audio = wav(500, i);
            assert_eq!(manager.transcribe(&audio).status, 200);
        }
        watch.finish();
    });
}

#[test]
fn backoff_really_backs_off_on_a_command_that_exits_at_once() {
    let manager = Setup::new().pool(1).stub(&["--exit-immediately"]).start();
    std::thread::sleep(Duration::from_secs(3));
    // Delays: 0, 100, 200, 400, 800, 800... ms: about 7 spawns in 3 s, not thousands.
    let spawn_times = spawn_times(&manager.log_text());
    assert!(
        (4..=12).contains(&spawn_times.len()),
        "{} spawns in 3 s",
        spawn_times.len()
    );
    let gaps: Vec<f64> = spawn_times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.last().unwrap() >= &0.75,
        "the backoff reached its 800 ms cap: {gaps:?}"
    );
    assert!(gaps[gaps.len() - 1] >= gaps[1], "delays grow: {gaps:?}");
    // No worker is alive, and the service says so.
    let health = manager.get("/health");
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "unhealthy");
    let reply = manager.transcribe(&wav(100, 1));
    assert_eq!(reply.status, 503);
    assert_eq!(reply.error_code(), "NO_HEALTHY_WORKERS");
    assert!(reply.header("retry-after").is_some());
}

/// Seconds-of-day of each "starting worker" log line.
fn spawn_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("starting worker-"))
        .map(|l| {
            let time = l.split('T').nth(1).unwrap();
            let mut parts = time[..time.find('Z').unwrap()].split(':');
            let h: f64 = parts.next().unwrap().parse().unwrap();
            let m: f64 = parts.next().unwrap().parse().unwrap();
            let s: f64 = parts.next().unwrap().parse().unwrap();
            h * 3600.0 + m * 60.0 + s
        })
        .collect()
}

#[test]
fn a_worker_that_fails_health_checks_is_replaced() {
    // Each stub turns unhealthy 1 s after it starts; maxHealthFailures is 2.
    let manager = Setup::new()
        .pool(1)
        .stub(&["--unhealthy-after-ms", "1000"])
        .start();
    let first = manager.wait_healthy(1)["workers"][0].clone();
    let replaced = manager.wait_replaced(&first["id"]);
    assert!(!alive(pid_of(&first)));
    assert!(replaced["restarts"].as_u64().unwrap() >= 1);
    assert!(manager.wait_log("failed its health check (2/2)"));
}

#[test]
fn a_hung_inference_times_out_and_the_worker_is_recycled() {
    // A 6 ms clip's inference deadline is the floor, audio.chunkTimeoutMinMs.
    let manager = Setup::new()
        .pool(1)
        .set("audio", "chunkTimeoutMinMs", json!(1500))
        .stub(&["--hang"])
        .start();
    let first = manager.wait_healthy(1)["workers"][0].clone();
    let started = Instant::now();
    let reply = manager.transcribe(&wav(100, 1));
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert_eq!(reply.error_code(), "TIMEOUT");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    manager.wait_replaced(&first["id"]); // the hung worker was recycled
    assert!(
        wait_for(SOON, || (!alive(pid_of(&first))).then_some(())).is_some(),
        "the hung worker was stopped"
    );
}

#[test]
fn a_full_queue_answers_503_with_retry_after() {
    let manager = Setup::new()
        .pool(1)
        .set("inference", "maxQueue", json!(2))
        .stub(&["--delay-ms", "600"])
        .start();
    manager.wait_healthy(1);
    let results = load(&manager, 6, 6);
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert!(ok >= 3, "one in flight and two queued are served: {ok}");
    assert!(!refused.is_empty(), "the rest are refused");
    for (_, body, _) in &refused {
        assert_eq!(body["code"], "CAPACITY_EXCEEDED");
    }
    assert_eq!(ok + refused.len(), 6);
}

#[test]
fn a_queued_request_gives_up_after_queue_timeout() {
    let manager = Setup::new()
        .pool(1)
        .set("inference", "queueTimeoutMs", json!(300))
        .stub(&["--delay-ms", "2000"])
        .start();
    manager.wait_healthy(1);
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| manager.transcribe(&wav(100, 1)));
        manager.busy_worker();
        let waited = manager.transcribe(&wav(100, 2));
        assert_eq!(waited.status, 503);
        assert_eq!(waited.error_code(), "CAPACITY_EXCEEDED");
        assert_eq!(waited.header("retry-after"), Some("1"));
        assert_eq!(slow.join().unwrap().status, 200);
    });
}

#[test]
fn requests_are_spread_round_robin() {
    let manager = Setup::new().pool(3).start();
    manager.wait_healthy(3);
    let mut used = std::collections::HashSet::new();
    for i in 0..6 {
        let reply = manager.transcribe(&wav(100, i));
        used.insert(
            reply.json()["result"]["metadata"]["worker_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(
        used.len(),
        3,
        "sequential requests visit every idle worker: {used:?}"
    );
}
