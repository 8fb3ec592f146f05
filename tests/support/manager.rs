//! The manager under test: [`Setup`] says how to start it, [`Manager`] is the running binary
//! with its stub workers, stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{b64, free_port_base, request};
use super::{pid_of, signal, wait_for, Reply, TempDir, SOON};

pub const MANAGER: &str = env!("CARGO_BIN_EXE_inference-server-manager");
pub const STUB: &str = env!("CARGO_BIN_EXE_stub-whisper-server");

/// How to start a manager: settings-file contents (JSON) and extra environment.
pub struct Setup {
    pub settings: Value,
    pub env: Vec<(String, String)>,
    pub stub_args: Vec<String>,
    pub args: Vec<String>,
    /// A program the manager is started through, e.g. `prlimit --nofile=64 --`.
    pub launcher: Vec<String>,
}

impl Setup {
    /// Two stub workers, fast health checks and backoff, test-sized timeouts.
    pub fn new() -> Setup {
        Setup {
            settings: json!({
                "server": { "host": "127.0.0.1", "threads": 16, "requestTimeoutMs": 10000 },
                "workers": {
                    "poolSize": 2, "startingPort": free_port_base(),
                    "healthIntervalMs": 200, "healthTimeoutMs": 500, "maxHealthFailures": 2,
                    "auditIntervalMs": 500, "startupTimeoutMs": 5000, "drainTimeoutMs": 3000,
                    "backoffBaseMs": 100, "backoffMaxMs": 800,
                },
                // Whether ffmpeg is installed must not change what a test sees: conversion is
                // off unless a test (one that needs ffmpeg) turns it on with `with_ffmpeg`.
                "audio": { "ffmpeg": "" },
            }),
            env: Vec::new(),
            stub_args: Vec::new(),
            args: Vec::new(),
            launcher: Vec::new(),
        }
    }

    /// Sets `section.key` in the settings file.
    pub fn set(mut self, section: &str, key: &str, value: Value) -> Setup {
        if !self.settings.get(section).is_some_and(Value::is_object) {
            self.settings[section] = json!({});
        }
        self.settings[section][key] = value;
        self
    }

    /// Uploads decoded by ffmpeg, as by default outside the tests.
    pub fn with_ffmpeg(self) -> Setup {
        self.set("audio", "ffmpeg", json!("ffmpeg"))
    }

    /// Sets a top-level key (`defaultModel`, `editor`) in the settings file.
    pub fn set_top(mut self, key: &str, value: Value) -> Setup {
        self.settings[key] = value;
        self
    }

    /// Real whisper-server workers from the build in `dir` (`needs::real_whisper`) with its
    /// tiny.en model, and timeouts that fit a real model's load and inference.
    pub fn real_worker(self, dir: &Path) -> Setup {
        self.set("workers", "startupTimeoutMs", json!(60_000))
            .set("workers", "healthTimeoutMs", json!(2000))
            .set("server", "requestTimeoutMs", json!(120_000))
            .env(
                "WHISPER_SERVER_CMD",
                dir.join("whisper-server").to_str().unwrap(),
            )
            .env(
                "WHISPER_SERVER_ARGS",
                &format!("-m {}", dir.join("ggml-tiny.en.bin").display()),
            )
    }

    /// The pool size of the default model.
    pub fn pool(self, size: u64) -> Setup {
        self.set("workers", "poolSize", json!(size))
    }

    /// A model `id` besides the default one, cold until loaded, on `models/{id}.bin`: its
    /// stub workers answer [`model_text`](super::model_text)`(id, audio)`.
    pub fn model(self, id: &str) -> Setup {
        self.set("models", id, json!({ "path": format!("models/{id}.bin") }))
    }

    /// [`Setup::model`] with a pool of its own size.
    pub fn model_with_pool(self, id: &str, pool_size: u64) -> Setup {
        let path = format!("models/{id}.bin");
        self.set("models", id, json!({ "path": path, "poolSize": pool_size }))
    }

    /// Arguments for every stub worker, e.g. `["--delay-ms", "40"]`.
    pub fn stub(mut self, args: &[&str]) -> Setup {
        self.stub_args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Arguments for the manager after `serve --port 0`, e.g. `["--mode", "rack"]`.
    pub fn args(mut self, args: &[&str]) -> Setup {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Starts the manager through `launcher`, which must exec it (keeping the pid).
    pub fn launcher(mut self, launcher: &[&str]) -> Setup {
        self.launcher = launcher.iter().map(|a| a.to_string()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn start(self) -> Manager {
        Manager::start(self, TempDir::new("mgr"))
    }
}

pub struct Manager {
    pub child: Child,
    pub port: u16,
    pub dir: TempDir,
    /// Everything the manager wrote to stderr so far, line by line.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Worker pids seen through `/api/v1/status`, killed on drop as a last defence.
    pub seen_pids: Mutex<Vec<u32>>,
}

impl Manager {
    pub fn start(setup: Setup, dir: TempDir) -> Manager {
        let config = dir.0.join("config/transcription_manager");
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(
            config.join("settings.json5"),
            serde_json::to_string_pretty(&setup.settings).unwrap(),
        )
        .unwrap();
        let mut env = vec![
            ("WHISPER_SERVER_CMD".to_string(), STUB.to_string()),
            ("WHISPER_SERVER_ARGS".to_string(), setup.stub_args.join(" ")),
        ];
        env.extend(setup.env);
        let mut args = vec!["serve".to_string(), "--port".into(), "0".into()];
        args.extend(setup.args);
        let mut command = command(&dir.0, &env, &setup.launcher);
        command.args(args);
        Manager::spawn(dir, command)
    }

    /// Starts `command` (the binary in `dir`'s XDG dirs) and waits for its port.
    pub fn spawn(dir: TempDir, mut command: Command) -> Manager {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("listening on http://")
                    .nth(1)
                    .and_then(|a| a.rsplit(':').next())
                {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let port = match rx.recv_timeout(SOON) {
            Ok(port) => port,
            Err(_) => {
                // SIGTERM lets it stop any worker it started; the pid records catch the rest.
                signal(child.id(), "TERM");
                if wait_for(Duration::from_secs(10), || child.try_wait().unwrap()).is_none() {
                    let _ = child.kill();
                }
                for pid in recorded_pids(&dir.0.join("data/transcription_manager")) {
                    signal(pid, "KILL");
                }
                panic!(
                    "manager did not start; log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Manager {
            child,
            port,
            dir,
            log,
            seen_pids: Mutex::new(Vec::new()),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until the log has a line containing `needle`. The manager's log thread writes
    /// lines in batches, up to 10 ms after they are logged: a line the manager has logged may
    /// not be in the log yet, so a test that expects one waits for it.
    pub fn wait_log(&self, needle: &str) -> bool {
        wait_for(SOON, || self.log_text().contains(needle).then_some(())).is_some()
    }

    /// The log once everything logged before this call is in it, for a test that looks for a
    /// line that must not be there: a request to a path nobody serves is logged after it, and
    /// the log keeps the order lines were logged in.
    pub fn settled_log(&self) -> String {
        static MARKS: AtomicUsize = AtomicUsize::new(0);
        let mark = format!("/log-mark-{}", MARKS.fetch_add(1, Ordering::Relaxed));
        self.get(&mark);
        assert!(
            self.wait_log(&format!("GET {mark} ")),
            "the request to {mark} was not logged:\n{}",
            self.log_text()
        );
        self.log_text()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.0.join("data/transcription_manager")
    }

    /// What the worker on `port` wrote, from its log file.
    pub fn worker_log(&self, port: &Value) -> String {
        let path = self
            .data_dir()
            .join(format!("logs/workers/worker-{port}.log"));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// What every worker has written once one of them has written `needle` (a worker's log
    /// is written by the manager's log pump, a moment after the worker prints it); panics if
    /// none does soon.
    pub fn wait_worker_logs(&self, needle: &str) -> String {
        wait_for(SOON, || {
            let logs = self.worker_logs();
            logs.contains(needle).then_some(logs)
        })
        .unwrap_or_else(|| panic!("no worker logged {needle:?}:\n{}", self.worker_logs()))
    }

    /// What every worker wrote, from their log files, one after another.
    pub fn worker_logs(&self) -> String {
        let dir = self.data_dir().join("logs/workers");
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        entries
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
            .collect()
    }

    pub fn get(&self, path: &str) -> Reply {
        request("GET", &self.url(path), &[], None)
    }

    pub fn post_json(&self, path: &str, body: &Value) -> Reply {
        request(
            "POST",
            &self.url(path),
            &[("Content-Type", "application/json")],
            Some(body.to_string().into_bytes()),
        )
    }

    /// `POST /api/v1/transcriptions` of `audio`, without timestamps.
    pub fn transcribe(&self, audio: &[u8]) -> Reply {
        self.post_json("/api/v1/transcriptions", &transcription(audio))
    }

    /// `/api/v1/status`, remembering the worker pids for cleanup.
    pub fn status(&self) -> Value {
        let status = self.get("/api/v1/status").json();
        let mut seen = self.seen_pids.lock().unwrap();
        for worker in status["workers"].as_array().into_iter().flatten() {
            let pid = pid_of(worker);
            if !seen.contains(&pid) {
                seen.push(pid);
            }
        }
        status
    }

    /// The worker entries of `/api/v1/status`.
    pub fn workers(&self) -> Vec<Value> {
        workers(&self.status()).to_vec()
    }

    /// Waits until `n` workers are healthy.
    pub fn wait_healthy(&self, n: u64) -> Value {
        wait_for(SOON, || {
            let status = self.status();
            (status["healthyWorkers"].as_u64() == Some(n)).then_some(status)
        })
        .unwrap_or_else(|| {
            panic!(
                "{n} workers never became healthy: {}\n{}",
                self.status(),
                self.log_text()
            )
        })
    }

    /// `wait_healthy` for a manager that requires an API key.
    pub fn wait_healthy_with_key(&self, n: u64, key: &str) {
        let auth = format!("Bearer {key}");
        wait_for(SOON, || {
            let status = request(
                "GET",
                &self.url("/api/v1/status"),
                &[("Authorization", &auth)],
                None,
            )
            .json();
            (status["healthyWorkers"].as_u64() == Some(n)).then_some(())
        })
        .unwrap_or_else(|| panic!("{n} workers never became healthy\n{}", self.log_text()));
    }

    /// Waits until a healthy worker other than `old_id` is serving, and returns it.
    pub fn wait_replaced(&self, old_id: &Value) -> Value {
        wait_for(SOON, || {
            self.workers()
                .into_iter()
                .find(|w| w["state"] == "healthy" && &w["id"] != old_id)
        })
        .unwrap_or_else(|| {
            panic!(
                "{old_id} was never replaced: {}\n{}",
                self.status(),
                self.log_text()
            )
        })
    }

    /// Waits for the worker that has a request in flight and returns its status entry.
    pub fn busy_worker(&self) -> Value {
        self.busy_worker_where(|_| true)
    }

    /// Waits for a worker of model `id` that has a request in flight.
    pub fn busy_worker_of(&self, id: &str) -> Value {
        self.busy_worker_where(|w| w["model"] == id)
    }

    fn busy_worker_where(&self, pick: impl Fn(&Value) -> bool) -> Value {
        wait_for(SOON, || {
            self.workers()
                .into_iter()
                .find(|w| w["inFlight"] == 1 && pick(w))
        })
        .unwrap_or_else(|| panic!("no worker took the request: {}", self.status()))
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers().iter().map(pid_of).collect()
    }

    /// SIGTERM, then the exit status within `SOON`.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        signal(self.child.id(), "TERM");
        wait_for(SOON, || self.child.try_wait().unwrap())
            .expect("manager did not exit after SIGTERM")
    }
}

impl Drop for Manager {
    /// A graceful stop first (it takes the workers down), then force for whatever is left:
    /// the manager, the workers seen in `/api/v1/status`, and those in the pid records.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(self.child.id(), "TERM");
            if wait_for(Duration::from_secs(10), || self.child.try_wait().unwrap()).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        let mut pids = self.seen_pids.lock().unwrap().clone();
        pids.extend(recorded_pids(&self.data_dir()));
        for pid in pids {
            signal(pid, "KILL");
        }
    }
}

/// The worker entries of a `/api/v1/status` answer.
pub fn workers(status: &Value) -> &[Value] {
    status["workers"]
        .as_array()
        .unwrap_or_else(|| panic!("no workers in {status}"))
}

/// The body of `POST /api/v1/transcriptions` for `audio`, without timestamps.
pub fn transcription(audio: &[u8]) -> Value {
    json!({ "content": b64(audio), "timestamps": false })
}

/// Worker pids in the manager's pid records.
pub fn recorded_pids(data_dir: &Path) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir(data_dir.join("pids")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| serde_json::from_str::<Value>(&text).ok()?["pid"].as_u64())
        .map(|pid| pid as u32)
        .collect()
}

/// The manager command with XDG dirs under `dir` and a clean environment for its settings,
/// started through `launcher` when one is given (it must exec the manager, keeping the pid).
pub fn command(dir: &Path, env: &[(String, String)], launcher: &[String]) -> Command {
    let mut command = match launcher.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(MANAGER);
            command
        }
        None => Command::new(MANAGER),
    };
    command
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("LOG_LEVEL", "debug")
        .stdin(Stdio::null());
    for name in [
        "INFERENCE_SERVER_PORT",
        "TRANSCRIPTION_MANAGER_PORT",
        "INFERENCE_SERVER_HOST",
        "WHISPER_SERVER_CMD",
        "WHISPER_SERVER_CWD",
        "WHISPER_SERVER_ARGS",
        "CORS_ORIGIN",
        "XDG_DIR_NAME",
        "INFERENCE_SERVER_API_KEYS",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
}
