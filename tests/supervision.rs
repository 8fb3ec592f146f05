//! Supervision under stress (README "Behaviour under failure"): what clients, hung workers,
//! model loads and a killed manager must not do to the pool. Each test prints the figure the
//! README's failure table gives.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

fn infer(manager: &Manager, model: &str, body: &Value) -> Reply {
    manager.post_json(&format!("/api/inference/{model}"), body)
}

fn pids(manager: &Manager) -> Vec<u32> {
    let mut pids = manager.worker_pids();
    pids.sort();
    pids
}

/// A model's entry in `/api/models`.
fn model_state(manager: &Manager, id: &str) -> String {
    let models = manager.get("/api/models").json();
    models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .map(|m| m["state"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{id} in {models}"))
}

fn metric(manager: &Manager, name: &str) -> f64 {
    let page = manager.get("/metrics").text();
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{page}"))
}

#[test]
fn a_clients_short_deadline_cancels_but_never_kills_a_worker() {
    // Three healthy workers, each inference 300 ms; three clients allow 100 ms.
    let manager = Setup::new().pool(3).stub(&["--delay-ms", "300"]).start();
    manager.wait_healthy(3);
    let before = pids(&manager);
    let body = json!({ "inputData": b64(&wav(800, 1)), "options": { "timeout": 100 } });
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| infer(&manager, "default", &body)))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for reply in &replies {
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (504, "TIMEOUT")
        );
    }
    std::thread::sleep(Duration::from_millis(800));
    let after = pids(&manager);
    report(&format!(
        "3 clients with options.timeout 100 ms on workers of 300 ms: 504 each; workers before {before:?}, after {after:?}"
    ));
    assert_eq!(before, after, "a client's deadline killed a worker");
    assert_eq!(manager.status()["healthyWorkers"], 3);
    let audio = wav(800, 2);
    let ok = infer(&manager, "default", &json!({ "inputData": b64(&audio) }));
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[test]
fn overload_recycles_no_worker() {
    // 2 workers of 300 ms, 20 requests with the server's 2 s deadline: most wait in the
    // queue, and those whose time runs out there are never sent to a worker.
    let manager = Setup::new()
        .stub(&["--delay-ms", "300"])
        .set("server", "threads", json!(64))
        .set("inference", "inferenceTimeoutMs", json!(2000))
        .set("inference", "queueTimeoutMs", json!(10_000))
        .start();
    manager.wait_healthy(2);
    let before = pids(&manager);
    let statuses: Vec<u16> = spread(20, 20, |i| {
        infer(
            &manager,
            "default",
            &json!({ "inputData": b64(&wav(800, i as u16)) }),
        )
        .status
    });
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let late = statuses.iter().filter(|s| **s == 504).count();
    let after = pids(&manager);
    report(&format!(
        "overload, 20 requests of 2 s on 2 workers of 300 ms: {ok} served, {late} timed out in the queue; workers before {before:?}, after {after:?}"
    ));
    assert_eq!(ok + late, 20, "{statuses:?}");
    assert!(late > 0, "the test did not overload the pool");
    assert_eq!(before, after, "overload recycled a worker");
    assert!(!manager.settled_log().contains("recycling"));
}

#[test]
fn hung_workers_delay_neither_a_respawn_nor_their_own_replacement() {
    // 4 workers, health checks of up to 2 s each; 3 are frozen, the 4th is killed.
    let manager = Setup::new()
        .pool(4)
        .set("workers", "healthTimeoutMs", json!(2000))
        .set("workers", "maxHealthFailures", json!(2))
        .start();
    let workers = workers(&manager.wait_healthy(4)).to_vec();
    for worker in &workers[..3] {
        signal(pid_of(worker), "STOP");
    }
    std::thread::sleep(Duration::from_millis(500)); // a health round meets the frozen ones
    let killed = &workers[3];
    let started = Instant::now();
    signal(pid_of(killed), "KILL");
    let original: Vec<Value> = workers.iter().map(|w| w["id"].clone()).collect();
    wait_for(SOON, || {
        manager
            .workers()
            .iter()
            .any(|w| w["state"] == "healthy" && !original.contains(&w["id"]))
            .then_some(())
    })
    .expect("the killed worker was never replaced");
    let respawn = started.elapsed();
    let frozen: Vec<Value> = workers[..3].iter().map(|w| w["id"].clone()).collect();
    let replaced = wait_for(Duration::from_secs(30), || {
        let now = manager.workers();
        frozen
            .iter()
            .all(|id| !now.iter().any(|w| &w["id"] == id))
            .then_some(())
    });
    let replace_hung = started.elapsed();
    report(&format!(
        "3 frozen workers and 1 killed: the killed one replaced in {respawn:?}, the frozen ones in {replace_hung:?}"
    ));
    assert!(replaced.is_some(), "{}", manager.status());
    assert!(respawn < Duration::from_secs(2), "{respawn:?}");
    manager.wait_healthy(4);
}

#[test]
fn loads_run_in_parallel_and_an_unload_waits_for_none() {
    // Every worker takes 2 s to load its model.
    let manager = Setup::new()
        .pool(1)
        .model("a")
        .model("b")
        .model("c")
        .stub(&["--load-ms", "2000"])
        .start();
    manager.wait_healthy(1);
    assert_eq!(
        manager.post_json("/api/models/c/load", &json!({})).status,
        200
    );
    let started = Instant::now();
    let (loads, unload) = std::thread::scope(|scope| {
        let loads: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|id| {
                let manager = &manager;
                scope.spawn(move || {
                    let reply = manager.post_json(&format!("/api/models/{id}/load"), &json!({}));
                    (reply.status, started.elapsed())
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        let unload_started = Instant::now();
        let unloaded = manager.post_json("/api/models/c/unload", &json!({}));
        assert_eq!(unloaded.status, 200, "{}", unloaded.text());
        let unload = unload_started.elapsed();
        let loads: Vec<(u16, Duration)> = loads.into_iter().map(|l| l.join().unwrap()).collect();
        (loads, unload)
    });
    report(&format!(
        "two 2 s loads at once: done at {:?} and {:?}; an unload meanwhile took {unload:?}",
        loads[0].1, loads[1].1
    ));
    for (status, at) in &loads {
        assert_eq!(*status, 200);
        assert!(
            *at < Duration::from_millis(3500),
            "{at:?}: the loads ran one after the other"
        );
    }
    assert!(unload < Duration::from_secs(1), "{unload:?}");
}

#[test]
fn a_model_unloaded_while_its_workers_start_leaves_no_worker() {
    let manager = Setup::new()
        .pool(1)
        .model("a")
        .stub(&["--load-ms", "1500"])
        .start();
    manager.wait_healthy(1);
    std::thread::scope(|scope| {
        let load = scope.spawn(|| manager.post_json("/api/models/a/load", &json!({})));
        wait_for(SOON, || {
            manager
                .workers()
                .iter()
                .any(|w| w["model"] == "a" && w["state"] == "starting")
                .then_some(())
        })
        .expect("a's worker never started");
        let unloaded = manager.post_json("/api/models/a/unload", &json!({}));
        assert_eq!(unloaded.json()["message"], "Model unloaded successfully");
        let _ = load.join().unwrap();
    });
    // Past the moment its worker would have turned healthy.
    std::thread::sleep(Duration::from_millis(2500));
    let left: Vec<Value> = manager
        .workers()
        .into_iter()
        .filter(|w| w["model"] == "a")
        .collect();
    report(&format!(
        "unload during start-up: workers of the model left after it would have been ready: {left:?}"
    ));
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(model_state(&manager, "a"), "cold");
    let reply = infer(&manager, "a", &json!({ "inputData": b64(&wav(800, 1)) }));
    assert_eq!(reply.status, 409, "{}", reply.text());
}

#[test]
fn readiness_is_the_default_models_and_liveness_the_process() {
    let manager = Setup::new()
        .pool(1)
        .model("b")
        .set("workers", "maxHealthFailures", json!(1000))
        .start();
    manager.wait_healthy(1);
    assert_eq!(
        manager.post_json("/api/models/b/load", &json!({})).status,
        200
    );
    assert_eq!(manager.get("/readyz").status, 200);
    let default = manager
        .workers()
        .into_iter()
        .find(|w| w["model"] == "default")
        .unwrap();
    // The default model's only worker stops answering; b's stays healthy.
    signal(pid_of(&default), "STOP");
    wait_for(SOON, || {
        manager
            .workers()
            .iter()
            .any(|w| w["id"] == default["id"] && w["state"] == "unhealthy")
            .then_some(())
    })
    .expect("the frozen worker never turned unhealthy");
    let health = manager.get("/health");
    let readyz = manager.get("/readyz");
    let livez = manager.get("/livez");
    let transcription = manager.transcribe(&wav(300, 1));
    signal(pid_of(&default), "CONT");
    report(&format!(
        "default model down, model b up: /health {} {}, /readyz {}, /livez {}, a transcription {}",
        health.status,
        health.json()["status"],
        readyz.status,
        livez.status,
        transcription.status
    ));
    assert_eq!(
        (health.status, health.json()["status"].as_str()),
        (503, Some("unhealthy"))
    );
    assert_eq!(health.json()["models"]["b"]["healthyWorkers"], 1);
    assert_eq!(readyz.status, 503);
    assert_eq!(livez.status, 200);
    assert_eq!(transcription.status, 503);
}

#[test]
fn only_rotations_count_as_rotations() {
    let manager = Setup::new()
        .pool(1)
        .model("a")
        .set("workers", "rotateThreshold", json!(2))
        .start();
    manager.wait_healthy(1);
    assert_eq!(
        manager.post_json("/api/models/a/load", &json!({})).status,
        200
    );
    assert_eq!(
        manager.post_json("/api/models/a/unload", &json!({})).status,
        200
    );
    wait_for(SOON, || {
        (!manager.workers().iter().any(|w| w["model"] == "a")).then_some(())
    })
    .expect("a's worker was never stopped");
    let after_unload = metric(&manager, "ism_worker_rotations_total");
    for i in 0..2 {
        assert_eq!(manager.transcribe(&wav(300, i)).status, 200);
    }
    let rotated = wait_for(SOON, || {
        let n = metric(&manager, "ism_worker_rotations_total");
        (n >= 1.0).then_some(n)
    });
    report(&format!(
        "ism_worker_rotations_total: {after_unload} after an unload drain, {rotated:?} after a worker reached rotateThreshold"
    ));
    assert_eq!(after_unload, 0.0);
    assert_eq!(rotated, Some(1.0));
}
