//! Faults under load: workers SIGKILLed at random while clients send transcriptions, and a
//! crash-looping worker command watched for CPU and log volume. Each test prints its figures.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::*;

/// A small deterministic generator: the test needs "random" victims and pauses, not a crate.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

#[test]
fn random_sigkills_under_load_lose_nothing() {
    const CLIENTS: usize = 4;
    const REQUESTS: usize = 300;
    let manager = Setup::new().pool(3).stub(&["--delay-ms", "20"]).start();
    manager.wait_healthy(3);
    let (outcomes, kills) = std::thread::scope(|scope| {
        let killer = Background::spawn(scope, |stop| {
            let mut rng = Lcg(7);
            let mut kills = 0;
            while !stop.requested() {
                std::thread::sleep(Duration::from_millis(100 + rng.next(300)));
                let pids = manager.worker_pids();
                if !pids.is_empty() {
                    signal(pids[rng.next(pids.len() as u64) as usize], "KILL");
                    kills += 1;
                }
            }
            kills
        });
        let outcomes = spread(CLIENTS, REQUESTS, |i| {
            let audio = wav(400 + i as u32, i as u16);
            let started = Instant::now();
            let reply = manager.transcribe(&audio);
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "request {i} hung"
            );
            match reply.status {
                200 => {
                    assert_eq!(
                        reply.json()["result"]["text"],
                        stub_text(&audio),
                        "wrong transcript for {i}"
                    );
                }
                503 => {
                    assert_eq!(reply.error_code(), "NO_HEALTHY_WORKERS", "{}", reply.text());
                    assert!(reply.header("retry-after").is_some());
                }
                other => panic!("request {i}: {other} {}", reply.text()),
            }
            reply.status
        });
        (outcomes, killer.finish())
    });
    let ok = outcomes.iter().filter(|s| **s == 200).count();
    let unavailable = outcomes.iter().filter(|s| **s == 503).count();
    report(&format!("chaos: {REQUESTS} sent, {ok} succeeded, {unavailable} got 503 (no worker alive), 0 other; {kills} workers SIGKILLed"));
    assert_eq!(ok + unavailable, REQUESTS);
    assert!(kills >= 5, "the killer ran: {kills}");
    manager.wait_healthy(3);
}

/// User plus system CPU seconds of `pid` so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command name: state is field 3, utime 14 and stime 15 (1-based), in ticks.
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[test]
fn a_crash_loop_costs_no_cpu_and_little_log() {
    let manager = Setup::new()
        .pool(1)
        .set("workers", "backoffMaxMs", json!(400))
        .stub(&["--exit-immediately"])
        .start();
    let before = cpu_seconds(manager.child.id());
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(4));
    let cpu = cpu_seconds(manager.child.id()) - before;
    let share = cpu / started.elapsed().as_secs_f64();
    let log = manager.log_text();
    let attempts = log.matches("starting worker-").count();
    let lines = log.lines().filter(|l| !l.contains("[DEBUG]")).count();
    let worker_lines = log
        .lines()
        .filter(|l| !l.contains("[DEBUG]") && l.contains("worker-"))
        .count();
    let audits = log.lines().filter(|l| l.contains("audit: only")).count();
    report(&format!(
        "crash loop: {attempts} spawn attempts in 4 s, manager CPU {:.1}% of one core, {lines} log lines \
         ({worker_lines} about workers, {audits} audit warnings at auditIntervalMs 500)",
        share * 100.0
    ));
    assert!(
        share < 0.25,
        "a crash loop must not spin: {:.0}% CPU",
        share * 100.0
    );
    assert!(attempts <= 20, "backoff keeps attempts few: {attempts}");
    assert!(
        worker_lines <= 2 * attempts,
        "two lines per attempt: {worker_lines} for {attempts}"
    );
    assert!(
        audits <= 9,
        "one audit warning per auditIntervalMs: {audits}"
    );
    assert_eq!(manager.get("/health").json()["status"], "unhealthy");
}
