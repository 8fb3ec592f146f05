//! Wiring: settings -> worker plan -> pool and monitor -> engine -> HTTP server (and rack
//! mode), and the graceful shutdown that unwinds them in the opposite order (README
//! "Behaviour under failure"). Nothing imports this module but `main`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::api::Api;
use crate::audio::ffmpeg::Ffmpeg;
use crate::cli::Mode;
use crate::engine::Engine;
use crate::http::{self, CommonHeaders, HttpServer};
use crate::pool::process::{self, SpawnError, WorkerCommand};
use crate::pool::{monitor, ModelSpec, MonitorEvent, Pool, PoolConfig};
use crate::rpc::orchestrator;
use crate::rpc::rack::RackServer;
use crate::settings::{Paths, Settings, SettingsError};

/// Longest wait for the orphans of a previous run to exit after SIGKILL.
const ORPHAN_WAIT: Duration = Duration::from_secs(5);

/// Model id shown for workers whose model comes from `whisperServer.args` (no `defaultModel`).
pub const ARGS_MODEL_ID: &str = "default";

/// Names OpenAI's SDKs and examples send as `model`: each means the default model, unless a
/// model's `aliases` in the settings claims it.
pub const OPENAI_ALIASES: &[&str] = &[
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-transcribe",
];

/// Why a command could not run. `main` prints it and exits with `exit_code()`.
#[derive(Debug)]
pub enum Error {
    /// The settings file, environment or flags are wrong (exit 2).
    Settings(SettingsError),
    /// No worker command is configured and the setup script's build is absent (exit 2).
    NoWorker {
        config_file: PathBuf,
        bundled: PathBuf,
    },
    /// `whisperServer.cmd` names no runnable program (exit 2).
    WorkerCommand(SpawnError),
    /// `whisperServer.args` choose a model with `-m` while `models` name files: the `-m` in the
    /// arguments would silently override every model's path (exit 2).
    ModelInArgs,
    /// Another manager runs on the same data directory, or its lock cannot be taken (exit 1).
    DataDir(process::LockError),
    /// The SIGINT/SIGTERM handler could not be installed (exit 1).
    Signals(ctrlc::Error),
    /// The HTTP port could not be opened (exit 1).
    Http(http::StartError),
    /// Rack mode's TCP port could not be opened (exit 1).
    Rack {
        addr: String,
        source: std::io::Error,
    },
    /// A thread of the service could not be started (exit 1).
    Thread {
        what: &'static str,
        source: std::io::Error,
    },
    /// `config edit` could not run the editor, or it failed (exit 1).
    Editor { program: String, why: String },
}

impl Error {
    /// 2 for what the operator must fix in the settings or the command line, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Settings(_)
            | Error::NoWorker { .. }
            | Error::WorkerCommand(_)
            | Error::ModelInArgs => 2,
            _ => 1,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Settings(e) => write!(f, "{e}"),
            Error::NoWorker {
                config_file,
                bundled,
            } => write!(
                f,
                "no worker command: set whisperServer.cmd in {} or the WHISPER_SERVER_CMD environment \
                 variable to a whisper-server binary, or run scripts/setup-whisper.sh to build one into {}",
                config_file.display(),
                bundled.display()
            ),
            Error::WorkerCommand(e) => write!(f, "whisperServer.cmd: {e}"),
            Error::ModelInArgs => f.write_str(
                "whisperServer.args (or WHISPER_SERVER_ARGS) choose a model with -m, which would override \
                 the path of every entry of `models`: remove -m from the arguments and name the file in \
                 `models` (with `defaultModel`) instead",
            ),
            Error::DataDir(e) => write!(f, "{e}"),
            Error::Signals(e) => write!(f, "cannot install the signal handler: {e}"),
            Error::Http(e) => write!(f, "{e}"),
            Error::Rack { addr, source } => {
                write!(f, "cannot listen for rack RPC on {addr}: {source}")
            }
            Error::Thread { what, source } => write!(f, "cannot start the {what} thread: {source}"),
            Error::Editor { program, why } => write!(f, "the editor `{program}` {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Settings(e) => Some(e),
            Error::WorkerCommand(e) => Some(e),
            Error::Signals(e) => Some(e),
            Error::DataDir(e) => Some(e),
            Error::Http(e) => Some(e),
            Error::Rack { source, .. } | Error::Thread { source, .. } => Some(source),
            Error::NoWorker { .. } | Error::ModelInArgs | Error::Editor { .. } => None,
        }
    }
}

impl From<SettingsError> for Error {
    fn from(e: SettingsError) -> Self {
        Error::Settings(e)
    }
}

/// The worker command, the default model and every model's `-m` path derived from the
/// settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerPlan {
    pub command: WorkerCommand,
    /// The model served by default.
    pub model: String,
    /// `-m` path of the default model, if the manager adds one.
    pub model_path: Option<String>,
    /// Every model the pool may run, the default one included.
    pub models: BTreeMap<String, ModelSpec>,
    /// Operator-facing notes, e.g. oversubscribed cores.
    pub warnings: Vec<String>,
}

/// `--threads` for each worker (none when `args` set it) and a warning when `pool` workers of
/// that many threads exceed the `cores`.
fn worker_threads(args: &[String], pool: usize, cores: usize) -> (Option<usize>, Vec<String>) {
    let fair_share = (cores / pool).max(1);
    let (threads, per_worker) = if process::args_set_threads(args) {
        (None, threads_in_args(args).unwrap_or(fair_share))
    } else {
        (Some(fair_share), fair_share)
    };
    let mut warnings = Vec::new();
    if pool * per_worker > cores {
        warnings.push(format!(
            "{pool} workers x {per_worker} threads exceed the {cores} CPU cores: the workers compete \
             for the cores and every transcription slows down; set the default model's poolSize x \
             --threads to at most {cores}"
        ));
    }
    (threads, warnings)
}

/// Resolves which program the workers run, with which model and thread count. With no
/// `whisperServer.cmd`, the build of `scripts/setup-whisper.sh` is used when present.
pub fn plan_workers(settings: &Settings, paths: &Paths, cores: usize) -> Result<WorkerPlan, Error> {
    let ws = &settings.whisper_server;
    if !settings.models.is_empty() && path_in_args(&ws.args).is_some() {
        return Err(Error::ModelInArgs);
    }
    let cwd = (!ws.cwd.is_empty()).then(|| PathBuf::from(&ws.cwd));
    let mut model_path = settings
        .models
        .get(&settings.default_model)
        .map(|m| m.path.clone());
    let program = if ws.cmd.is_empty() {
        let bundled = paths.bundled_whisper_server();
        if !bundled.is_file() {
            return Err(Error::NoWorker {
                config_file: paths.config_file.clone(),
                bundled,
            });
        }
        if model_path.is_none() && !ws.args.iter().any(|a| a == "-m" || a == "--model") {
            model_path = Some(paths.bundled_model().to_string_lossy().into_owned());
        }
        bundled
    } else {
        process::resolve_program(&ws.cmd, cwd.as_deref()).map_err(Error::WorkerCommand)?
    };
    let pool_size = settings.workers.pool_size;
    let model = if settings.default_model.is_empty() {
        ARGS_MODEL_ID.to_string()
    } else {
        settings.default_model.clone()
    };
    let mut models: BTreeMap<String, ModelSpec> = settings
        .models
        .iter()
        .map(|(id, m)| {
            (
                id.clone(),
                ModelSpec {
                    path: Some(m.path.clone()),
                    pool_size: m.pool_size.unwrap_or(pool_size),
                    aliases: m.aliases.clone(),
                    english_only: ModelSpec::is_english_only_file(&m.path),
                },
            )
        })
        .collect();
    let claimed: Vec<String> = models.values().flat_map(|m| m.aliases.clone()).collect();
    let default_path = model_path.clone().or_else(|| path_in_args(&ws.args));
    let default = models.entry(model.clone()).or_insert_with(|| ModelSpec {
        path: None,
        pool_size,
        aliases: Vec::new(),
        english_only: default_path
            .as_deref()
            .is_some_and(ModelSpec::is_english_only_file),
    });
    default.path = model_path.clone();
    // The cores are shared out among the default model's workers, which run all the time;
    // another model's workers get as many threads each.
    let default_pool = default.pool_size;
    let (threads, warnings) = worker_threads(&ws.args, default_pool, cores);
    default.aliases.extend(
        OPENAI_ALIASES
            .iter()
            .filter(|a| !claimed.iter().any(|c| c == *a) && **a != model)
            .map(|a| a.to_string()),
    );
    Ok(WorkerPlan {
        command: WorkerCommand {
            program,
            cwd,
            args: ws.args.clone(),
            threads,
        },
        model,
        model_path,
        models,
        warnings,
    })
}

/// The `-m`/`--model` path in the worker arguments.
fn path_in_args(args: &[String]) -> Option<String> {
    args.iter()
        .position(|a| a == "-m" || a == "--model")
        .and_then(|i| args.get(i + 1).cloned())
}

fn threads_in_args(args: &[String]) -> Option<usize> {
    args.iter().enumerate().find_map(|(i, a)| match a.as_str() {
        "-t" | "--threads" => args.get(i + 1)?.parse().ok(),
        _ => a.strip_prefix("--threads=")?.parse().ok(),
    })
}

/// Runs the service until SIGINT or SIGTERM, then shuts down gracefully.
pub fn serve(settings: Settings, paths: &Paths, mode: Mode) -> Result<(), Error> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let plan = plan_workers(&settings, paths, cores)?;
    // Held until the process exits: the pid records and workers under it are this manager's.
    let _data_dir = process::lock_data_dir(&paths.data_dir).map_err(Error::DataDir)?;
    // Installed before any worker exists, so a signal can never leave one behind.
    let signals = signal_channel()?;
    for warning in &plan.warnings {
        log::warn!("{warning}");
    }
    warn_if_open_to_the_world(&settings);
    raise_fd_limit();
    use_the_system_futex_table();
    let _ = keep_freed_memory_for_the_next_request();

    let (monitor_tx, monitor_rx) = mpsc::channel();
    let pool = Arc::new(Pool::new(
        pool_config(&settings, paths, plan),
        monitor_tx.clone(),
    ));
    let boot_id = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (host, port) = (settings.server.host.clone(), settings.server.port);
    let ffmpeg = find_ffmpeg(&settings);
    let engine = Arc::new(Engine::new(settings, Arc::clone(&pool), ffmpeg, boot_id));

    // The port opens before any worker is ready: /health says "unhealthy" until one is.
    let server = HttpServer::start(
        &host,
        port,
        http_config(&engine.settings, boot_id),
        Arc::new(Api::new(Arc::clone(&engine))),
    )
    .map_err(Error::Http)?;
    log::info!("listening on http://{}", server.addr);
    // With the port open (it answers "unhealthy" meanwhile), before any worker is spawned.
    let reaped = process::reap_orphans(&engine.pool.config.pid_dir, ORPHAN_WAIT);
    if reaped > 0 {
        log::warn!("reaped {reaped} worker(s) left behind by a previous run");
    }
    let monitor = monitor::start(pool, monitor_rx).map_err(|source| Error::Thread {
        what: "monitor",
        source,
    })?;

    let rack = match mode {
        Mode::Rack => Some(start_rack(&engine)?),
        Mode::Http => None,
    };

    let _ = signals.recv();
    if let Some(rack) = rack {
        rack.stop();
    }
    let drain = engine.settings.workers.drain_timeout();
    log::info!(
        "shutting down: no new connections; draining requests for up to {} ms",
        drain.as_millis()
    );
    if !server.shutdown(drain) {
        log::warn!(
            "some requests were still running after drainTimeoutMs; stopping workers anyway"
        );
    }
    let _ = monitor_tx.send(MonitorEvent::Shutdown);
    let _ = monitor.join();
    log::info!("stopped");
    Ok(())
}

/// The ffmpeg of `audio.ffmpeg`, and a log line on what conversion can do: not finding it is
/// no reason to stop (WAV, MP3, FLAC and Ogg Vorbis still work), but the operator is told.
pub fn find_ffmpeg(settings: &Settings) -> Option<Ffmpeg> {
    let audio = &settings.audio;
    match Ffmpeg::find(
        &audio.ffmpeg,
        audio.max_conversions,
        audio.conversion_timeout(),
    ) {
        Ok(Some(ffmpeg)) => {
            log::info!(
                "audio conversion: {} ({}); any format it decodes is accepted",
                ffmpeg.program().display(),
                ffmpeg.version()
            );
            Some(ffmpeg)
        }
        Ok(None) => {
            log::info!("audio conversion is off (audio.ffmpeg is \"\"): {NO_FFMPEG}");
            None
        }
        Err(e) => {
            log::warn!("audio conversion is unavailable: audio.ffmpeg: {e}; {NO_FFMPEG}; install ffmpeg (apt-get install ffmpeg) to take any format");
            None
        }
    }
}

/// What the service takes without ffmpeg.
const NO_FFMPEG: &str = "WAV of any rate is read by the manager, MP3, FLAC and Ogg Vorbis go whole to a worker (without chunking), and other formats get 415";

fn pool_config(settings: &Settings, paths: &Paths, plan: WorkerPlan) -> PoolConfig {
    let inference = &settings.inference;
    PoolConfig {
        command: plan.command,
        model: plan.model,
        models: plan.models,
        max_concurrent: inference.max_concurrent_inferences,
        workers: settings.workers.clone(),
        max_queue: inference.max_queue,
        queue_timeout: inference.queue_timeout(),
        model_cache_size: inference.model_cache_size,
        log_dir: paths.worker_log_dir(),
        pid_dir: paths.pid_dir(),
    }
}

fn http_config(settings: &Settings, boot_id: u64) -> http::Config {
    let server = &settings.server;
    http::Config {
        threads: server.threads,
        read_timeout: server.read_timeout(),
        write_timeout: server.write_timeout(),
        limits: http::BodyLimits {
            max_bytes: server.max_body_bytes,
            timeout: server.request_timeout(),
        },
        common: CommonHeaders {
            cors_origin: server.cors_origin.clone(),
        },
        request_id_prefix: format!("req-{boot_id:x}"),
    }
}

/// A channel that receives once per SIGINT or SIGTERM.
fn signal_channel() -> Result<mpsc::Receiver<()>, Error> {
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(Error::Signals)?;
    Ok(rx)
}

/// Rack mode's pieces: JSON-RPC on TCP `rack.port`, and the orchestrator registration when
/// `rack.orchestratorUrl` is set.
struct Rack {
    server: RackServer,
    registration: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

impl Rack {
    fn stop(self) {
        if let Some((stop, thread)) = self.registration {
            let _ = stop.send(());
            let _ = thread.join();
        }
        self.server.stop();
    }
}

fn start_rack(engine: &Arc<Engine>) -> Result<Rack, Error> {
    let rack = &engine.settings.rack;
    let host = &engine.settings.server.host;
    let server =
        RackServer::start(Arc::clone(engine), host, rack.port).map_err(|source| Error::Rack {
            addr: format!("{host}:{}", rack.port),
            source,
        })?;
    log::info!("rack RPC listening on tcp://{}", server.addr);
    let registration = if rack.orchestrator_url.is_empty() {
        None
    } else {
        let host = advertised_host(host);
        let address = format!("{host}:{}", server.addr.port());
        let worker_id = format!("ism-{host}-{}", server.addr.port());
        let (stop, stopped) = mpsc::channel();
        let thread = orchestrator::start(
            Arc::clone(engine),
            rack.orchestrator_url.clone(),
            worker_id,
            address,
            rack.heartbeat(),
            stopped,
        )
        .map_err(|source| Error::Thread {
            what: "orchestrator registration",
            source,
        })?;
        Some((stop, thread))
    };
    Ok(Rack {
        server,
        registration,
    })
}

/// The host an orchestrator should dial: the listen address, or this machine's name when
/// listening on every address.
fn advertised_host(host: &str) -> String {
    let unspecified = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_unspecified());
    if !unspecified {
        return host.to_string();
    }
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

/// Raises the soft limit on open files to the hard limit: every connection costs two file
/// descriptors (tiny_http clones each socket), and the soft limit is often 1024 while the hard
/// one is far higher (systemd: 1024 and 524288). The workers inherit it; it costs nothing
/// until used.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => log::debug!("open files limit raised from {soft} to {hard}"),
            Err(e) => log::warn!("cannot raise the open files limit from {soft}: {e}"),
        }
    }
    if hard < 4096 {
        log::warn!(
            "the open files limit is {hard}: each connection takes two, so about {} clients at once \
             can exhaust it; raise it (LimitNOFILE= in the systemd unit, ulimit -n)",
            hard / 2
        );
    }
}

/// `prctl` options of <linux/prctl.h> since Linux 6.16, which the libc crate does not name.
const PR_FUTEX_HASH: nix::libc::c_int = 78;
const PR_FUTEX_HASH_SET_SLOTS: nix::libc::c_ulong = 1;
/// What `prctl` reads for an argument an option does not take.
const UNUSED: nix::libc::c_ulong = 0;

/// Has the kernel keep this process's futexes (what a thread waiting on a lock or a condition
/// variable sleeps on) in its system-wide table, as every process's were before Linux 6.16.
/// Since 6.16 a process gets a table of its own, sized by its threads but at most by the cores
/// online: 16 lists on two cores. The manager's 1,024 request threads, each asleep on a
/// condition variable of its own, then share 16 lists, and every wake searches one of about
/// 65 sleepers, under a lock that their sleeps and wakes share: 7% of the manager's CPU under
/// load (`perf`). A kernel without tables of their own refuses the call, which changes nothing.
#[allow(unsafe_code)]
fn use_the_system_futex_table() {
    const SYSTEM_WIDE: nix::libc::c_ulong = 0;
    // SAFETY: integers only; the kernel reads no memory of ours for this option.
    let set = unsafe {
        nix::libc::prctl(
            PR_FUTEX_HASH,
            PR_FUTEX_HASH_SET_SLOTS,
            SYSTEM_WIDE,
            UNUSED,
            UNUSED,
        )
    };
    if set != 0 {
        log::debug!(
            "futexes stay in this process's own table: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Free memory glibc keeps at the top of each of its heaps before handing it back.
const TRIM_THRESHOLD: nix::libc::c_int = 1 << 20;

/// Has glibc keep up to `TRIM_THRESHOLD` free at the top of each heap, not 128 KiB. A request
/// allocates some 150 KB in buffers of 30-60 KB (the body, the audio, its samples, the
/// worker's form), on the threads of its connection and its request, in glibc's per-thread
/// arenas. At 16 connections the top of a heap swung past 128 KiB at every few frees: 0.4
/// `madvise` calls a request handed pages back, each stopping the other core to flush its
/// TLB, and 3.4 page faults a request took them back (`perf stat`). With 384 KiB or more,
/// neither happens; 1 MiB leaves room for more connections. At most this much per arena stays
/// resident after a burst (glibc makes up to 8 arenas a core). Setting it also stops glibc
/// from raising its threshold for mapping an allocation by itself (128 KiB) after a large
/// free, so a large upload's buffers are always unmapped as soon as they are freed.
///
/// Returns whether glibc took the setting.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn keep_freed_memory_for_the_next_request() -> bool {
    // SAFETY: integers only; mallopt changes malloc's parameters, under malloc's own lock.
    let set = unsafe { nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD) };
    if set != 1 {
        log::debug!("glibc kept its trim threshold (mallopt answered {set})");
    }
    set == 1
}

/// Other allocators trim as they see fit.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory_for_the_next_request() -> bool {
    false
}

fn warn_if_open_to_the_world(settings: &Settings) {
    let host = &settings.server.host;
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback && settings.server.api_keys.is_empty() {
        log::warn!(
            "listening on {host} with no API keys: anyone who can reach this port can use the workers; \
             set server.apiKeys or INFERENCE_SERVER_API_KEYS, or listen on 127.0.0.1 behind a proxy"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ModelSettings;

    fn paths() -> Paths {
        Paths {
            config_file: "/nonexistent/settings.json5".into(),
            data_dir: "/nonexistent/data".into(),
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn glibc_takes_the_trim_threshold() {
        assert!(keep_freed_memory_for_the_next_request());
    }

    #[test]
    #[allow(unsafe_code)]
    fn futexes_go_to_the_system_wide_table_where_processes_have_their_own() {
        const PR_FUTEX_HASH_GET_SLOTS: nix::libc::c_ulong = 2;
        use_the_system_futex_table();
        // SAFETY: integers only, as in `use_the_system_futex_table`.
        let slots = unsafe {
            nix::libc::prctl(
                PR_FUTEX_HASH,
                PR_FUTEX_HASH_GET_SLOTS,
                UNUSED,
                UNUSED,
                UNUSED,
            )
        };
        if slots < 0 {
            let error = std::io::Error::last_os_error();
            assert_eq!(
                error.raw_os_error(),
                Some(nix::libc::EINVAL),
                "{error}: a kernel before 6.16"
            );
        } else {
            assert_eq!(slots, 0, "0 slots: the system-wide table");
        }
    }

    #[test]
    fn no_command_and_no_build_names_every_way_out() {
        let err = plan_workers(&Settings::default(), &paths(), 4)
            .unwrap_err()
            .to_string();
        for needle in [
            "whisperServer.cmd",
            "WHISPER_SERVER_CMD",
            "scripts/setup-whisper.sh",
        ] {
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn threads_are_the_fair_share_of_cores() {
        let mut s = Settings::default();
        s.whisper_server.cmd = "sh".into();
        s.workers.pool_size = 2;
        let plan = plan_workers(&s, &paths(), 8).unwrap();
        assert_eq!(plan.command.threads, Some(4));
        assert!(plan.warnings.is_empty());
        s.workers.pool_size = 3;
        assert_eq!(
            plan_workers(&s, &paths(), 2).unwrap().command.threads,
            Some(1)
        );
    }

    #[test]
    fn the_default_models_own_pool_size_shares_out_the_cores() {
        let mut s = Settings::default();
        s.whisper_server.cmd = "sh".into();
        s.workers.pool_size = 3;
        s.models.insert(
            "tiny".into(),
            ModelSettings {
                path: "/m/ggml-tiny.en.bin".into(),
                pool_size: Some(1),
                aliases: Vec::new(),
            },
        );
        s.default_model = "tiny".into();
        let plan = plan_workers(&s, &paths(), 2).unwrap();
        assert_eq!(plan.models["tiny"].pool_size, 1);
        assert_eq!(
            plan.command.threads,
            Some(2),
            "both cores for the one worker"
        );
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn explicit_threads_are_kept_and_oversubscription_warned() {
        let mut s = Settings::default();
        s.whisper_server.cmd = "sh".into();
        s.whisper_server.args = vec!["-t".into(), "4".into()];
        s.workers.pool_size = 2;
        let plan = plan_workers(&s, &paths(), 2).unwrap();
        assert_eq!(plan.command.threads, None);
        assert!(plan.warnings[0].contains("exceed"), "{:?}", plan.warnings);
    }

    #[test]
    fn openai_names_alias_the_default_model_unless_claimed() {
        let mut s = Settings::default();
        s.whisper_server.cmd = "sh".into();
        s.whisper_server.args = vec!["-m".into(), "/m/ggml-base.en-q5_1.bin".into()];
        let plan = plan_workers(&s, &paths(), 2).unwrap();
        let default = &plan.models[ARGS_MODEL_ID];
        assert!(
            default.english_only,
            "the -m in the arguments names an .en model"
        );
        assert_eq!(default.aliases, OPENAI_ALIASES);
        s.whisper_server.args.clear();
        s.models.insert(
            "large".into(),
            ModelSettings {
                path: "/m/ggml-large-v3.bin".into(),
                pool_size: None,
                aliases: vec!["whisper-1".into()],
            },
        );
        let plan = plan_workers(&s, &paths(), 2).unwrap();
        assert!(!plan.models["large"].english_only);
        assert!(!plan.models[ARGS_MODEL_ID]
            .aliases
            .contains(&"whisper-1".to_string()));
    }

    #[test]
    fn a_model_in_the_arguments_cannot_shadow_the_models() {
        let mut s = Settings::default();
        s.whisper_server.cmd = "sh".into();
        s.whisper_server.args = vec!["-m".into(), "tiny.en.bin".into()];
        assert!(
            plan_workers(&s, &paths(), 2).is_ok(),
            "alone, -m chooses the model"
        );
        s.models.insert(
            "base".into(),
            ModelSettings {
                path: "base.bin".into(),
                pool_size: None,
                aliases: Vec::new(),
            },
        );
        let err = plan_workers(&s, &paths(), 2).unwrap_err();
        assert!(matches!(err, Error::ModelInArgs), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn english_only_files_are_told_by_their_names() {
        for (name, english_only) in [
            ("ggml-tiny.en.bin", true),
            ("/x/ggml-base.en-q5_1.bin", true),
            ("model.EN", true),
            ("ggml-large-v3.bin", false),
            ("/en/ggml-small.bin", false),
            ("ggml-medium.bin.en-backup/x.bin", false),
        ] {
            assert_eq!(
                ModelSpec::is_english_only_file(name),
                english_only,
                "{name}"
            );
        }
    }

    #[test]
    fn default_model_adds_its_path() {
        let mut s = Settings::default();
        s.whisper_server.cmd = "sh".into();
        s.models.insert(
            "base".into(),
            ModelSettings {
                path: "m/base.bin".into(),
                pool_size: None,
                aliases: Vec::new(),
            },
        );
        s.default_model = "base".into();
        let plan = plan_workers(&s, &paths(), 2).unwrap();
        assert_eq!(
            (plan.model.as_str(), plan.model_path.as_deref()),
            ("base", Some("m/base.bin"))
        );
        s.default_model.clear();
        assert_eq!(plan_workers(&s, &paths(), 2).unwrap().model, ARGS_MODEL_ID);
    }
}
