//! Settings: the JSON5 file, the environment and the command-line flags, merged in that order
//! of increasing precedence over built-in defaults (README "Configuration").
//!
//! - this file: the structs, every default with its reason, validation, `load`;
//! - `file`: the JSON5 file, its shape check and `file:line: key` errors, the defaults file;
//! - `env`: environment variables and flags;
//! - `paths`: the XDG directories.
//!
//! Durations are stored in milliseconds, as the file writes them, and read as `Duration`
//! through the accessors here: the conversion happens in `ms` and nowhere else.

mod env;
mod file;
mod paths;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use env::{apply_env, apply_overrides};
pub use file::{default_file_text, parse_file, write_defaults};
pub use paths::{Paths, DEFAULT_DIR_NAME};

/// Fewest request threads the settings allow: a quarter of the threads is kept away from
/// uploads, queued requests and model loads (see `http::work_permit_cap`), and that quarter
/// must be at least one thread.
pub const MIN_SERVER_THREADS: usize = 4;

/// Largest `beamSize` and `bestOf`: whisper.cpp runs at most 8 decoders
/// (`WHISPER_MAX_DECODERS`) and fails every inference that asks for more.
pub const MAX_SEARCH_WIDTH: u32 = 8;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    pub server: ServerSettings,
    pub workers: WorkerSettings,
    pub whisper_server: WhisperServerSettings,
    /// Models by id: `{ path, poolSize? }`. Empty by default: the worker command's own
    /// arguments (or the setup script's model) choose the one model.
    pub models: BTreeMap<String, ModelSettings>,
    /// A key of `models` served by default; empty means the worker arguments' model.
    pub default_model: String,
    pub inference: InferenceSettings,
    pub audio: AudioSettings,
    pub rack: RackSettings,
    /// The editor `config edit` opens (then `$EDITOR`, then `vi`).
    pub editor: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerSettings {
    /// `0.0.0.0`: the original service listened on every address; a warning is logged when
    /// that is done without API keys.
    pub host: String,
    /// 3141, the original service's port, so existing clients keep working.
    pub port: u16,
    /// Fixed number of request threads, 1024: sized for a thread per connection, so 500
    /// stalled uploads leave room for everyone else. A parked thread costs about 10 KB
    /// resident (measured: see the README's "Slow and hostile clients").
    pub threads: usize,
    /// 10 s: longest silence on a connection (in its head, in its body, or between keep-alive
    /// requests); a client silent that long is disconnected.
    pub read_timeout_ms: u64,
    /// 10 s: longest a response may wait for a client that does not read it.
    pub write_timeout_ms: u64,
    /// `http://localhost:5173`, the original's web front end in development.
    pub cors_origin: String,
    /// 100 MiB: about an hour of 16 kHz WAV, or many hours of compressed audio.
    pub max_body_bytes: u64,
    /// 120 s for the upload and the whole transcription of `/api/v1/transcriptions`.
    pub request_timeout_ms: u64,
    /// Bearer keys; empty means no key is asked for.
    pub api_keys: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerSettings {
    /// 3 workers of the default model.
    pub pool_size: usize,
    /// 25 requests, then a worker is replaced: whisper-server leaks memory per request.
    pub rotate_threshold: u64,
    /// 39000: far from common service ports; the next free port at or above it is used.
    pub starting_port: u16,
    /// 5 s between health checks of running workers.
    pub health_interval_ms: u64,
    /// 2 s: `/health` answers in microseconds when the worker lives.
    pub health_timeout_ms: u64,
    /// 3 failed checks in a row replace a worker: one slow answer is not a death.
    pub max_health_failures: u32,
    /// 30 s between audits of the books against the processes.
    pub audit_interval_ms: u64,
    /// 30 s for a worker to load its model and answer `/health`.
    pub startup_timeout_ms: u64,
    /// 30 s for a retiring worker's last request, and for requests at shutdown.
    pub drain_timeout_ms: u64,
    /// 1 s, doubling, between respawns of a slot that keeps failing...
    pub backoff_base_ms: u64,
    /// ...up to 60 s, so a crash loop costs nothing.
    pub backoff_max_ms: u64,
}

impl WorkerSettings {
    pub fn health_interval(&self) -> Duration {
        ms(self.health_interval_ms)
    }
    pub fn health_timeout(&self) -> Duration {
        ms(self.health_timeout_ms)
    }
    pub fn audit_interval(&self) -> Duration {
        ms(self.audit_interval_ms)
    }
    pub fn startup_timeout(&self) -> Duration {
        ms(self.startup_timeout_ms)
    }
    pub fn drain_timeout(&self) -> Duration {
        ms(self.drain_timeout_ms)
    }
    pub fn backoff_base(&self) -> Duration {
        ms(self.backoff_base_ms)
    }
    pub fn backoff_max(&self) -> Duration {
        ms(self.backoff_max_ms)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WhisperServerSettings {
    /// The worker program; empty means the build of `scripts/setup-whisper.sh`.
    pub cmd: String,
    /// Its working directory; empty means the manager's.
    pub cwd: String,
    /// Extra arguments after the ones the manager adds (`--host`, `--port`, `-m`, `--threads`).
    pub args: Vec<String>,
    /// Sent with every request (`entropy_thold`): a decode whose token entropy passes this is
    /// retried at a higher temperature, which stops repetition loops. 2.4, whisper's default.
    pub entropy_threshold: f64,
    /// `logprob_thold`: a decode whose mean log-probability is below this is retried.
    /// -1.0, whisper's default.
    pub logprob_threshold: f64,
    /// `no_speech_thold`: a window this likely to be silence, and badly decoded, is skipped
    /// instead of hallucinated into text. 0.6, whisper's default.
    pub no_speech_threshold: f64,
    /// `beam_size`: 0 or 1 decodes greedily (fastest); 2 or more searches that many beams.
    pub beam_size: u32,
    /// `best_of`: candidates sampled when a decode falls back to a higher temperature. 2,
    /// whisper-server's default.
    pub best_of: u32,
    /// `suppress_nst`: suppress non-speech tokens (music notes, `[BLANK_AUDIO]`, ...).
    /// Off, whisper's default.
    pub suppress_non_speech: bool,
}

impl Default for WhisperServerSettings {
    fn default() -> Self {
        WhisperServerSettings {
            cmd: String::new(),
            cwd: String::new(),
            args: Vec::new(),
            entropy_threshold: 2.4,
            logprob_threshold: -1.0,
            no_speech_threshold: 0.6,
            beam_size: 0,
            best_of: 2,
            suppress_non_speech: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSettings {
    pub path: String,
    /// Workers of this model; `workers.poolSize` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
    /// Other names clients may use for it (OpenAI's `model`, say); none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct InferenceSettings {
    /// 10 inferences at once across all models: more than the default pool, so only a large
    /// multi-model pool meets it.
    pub max_concurrent_inferences: usize,
    /// 30 s for `/api/inference/:modelId` when the request gives no `options.timeout`.
    pub inference_timeout_ms: u64,
    /// 5 models with workers at once; the least recently used is evicted past that.
    pub model_cache_size: usize,
    /// 64 requests waiting for a worker; more get 503 at once.
    pub max_queue: usize,
    /// 30 s in the queue, then 503.
    pub queue_timeout_ms: u64,
    /// 1000 past runs kept for `/api/inference/history`.
    pub history_size: usize,
    /// `false`: a request for a cold model gets 409 rather than waiting for a load.
    pub auto_load: bool,
}

impl InferenceSettings {
    pub fn inference_timeout(&self) -> Duration {
        ms(self.inference_timeout_ms)
    }
    pub fn queue_timeout(&self) -> Duration {
        ms(self.queue_timeout_ms)
    }
}

impl ServerSettings {
    pub fn request_timeout(&self) -> Duration {
        ms(self.request_timeout_ms)
    }
    pub fn read_timeout(&self) -> Duration {
        ms(self.read_timeout_ms)
    }
    pub fn write_timeout(&self) -> Duration {
        ms(self.write_timeout_ms)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct AudioSettings {
    /// `ffmpeg`, looked up on `PATH`: the program every upload is decoded with (any format
    /// ffmpeg reads). A path names another; `""` turns conversion off (then WAV is read by the
    /// manager, MP3/FLAC/Ogg go to a worker whole, and anything else is 415).
    pub ffmpeg: String,
    /// 30 s, whisper's own window: audio longer than this is cut at pauses into chunks of at
    /// most this length, transcribed by the pool's workers in parallel.
    pub chunk_seconds: u64,
    /// 4 hours: longer audio is refused with 413 before any inference.
    pub max_seconds: u64,
    /// 8 hours, two of the longest recordings (920 MB): decoded audio the manager holds at
    /// once across all requests (`audio::budget`); past it, 503.
    pub max_seconds_in_memory: u64,
    /// 2 ffmpeg processes at once: a conversion keeps a core busy, and a small VPS has few.
    pub max_conversions: usize,
    /// 5 minutes for one conversion: ffmpeg decodes hours of compressed audio in far less.
    pub conversion_timeout_ms: u64,
    /// A chunk's inference deadline, in seconds per second of its audio: 4 leaves a CPU
    /// worker of a large model room, and only a worker that passes it is recycled as hung.
    pub chunk_timeout_factor: u64,
    /// The shortest chunk deadline, 10 s: a worker's fixed cost per request (the HTTP round
    /// trip, the encoder's first window) is seconds on a loaded CPU whatever the length.
    pub chunk_timeout_min_ms: u64,
}

impl AudioSettings {
    pub fn conversion_timeout(&self) -> Duration {
        ms(self.conversion_timeout_ms)
    }

    /// The inference deadline of a chunk of `seconds` of audio.
    pub fn chunk_timeout(&self, seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds * self.chunk_timeout_factor as f64)
            .max(ms(self.chunk_timeout_min_ms))
    }
}

impl Default for AudioSettings {
    fn default() -> Self {
        AudioSettings {
            ffmpeg: "ffmpeg".into(),
            chunk_seconds: 30,
            max_seconds: 14_400,
            max_seconds_in_memory: 28_800,
            max_conversions: 2,
            conversion_timeout_ms: 300_000,
            chunk_timeout_factor: 4,
            chunk_timeout_min_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RackSettings {
    /// 3142, beside the HTTP port.
    pub port: u16,
    /// Tokens a JSON-RPC request must carry as `auth`; empty means none is asked for.
    pub allow: Vec<String>,
    /// Where to register in rack mode; empty means no registration.
    pub orchestrator_url: String,
    /// 10 s between registrations.
    pub heartbeat_ms: u64,
}

impl RackSettings {
    pub fn heartbeat(&self) -> Duration {
        ms(self.heartbeat_ms)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server: ServerSettings::default(),
            workers: WorkerSettings::default(),
            whisper_server: WhisperServerSettings::default(),
            models: BTreeMap::new(),
            default_model: String::new(),
            inference: InferenceSettings::default(),
            audio: AudioSettings::default(),
            rack: RackSettings::default(),
            editor: "nvim".into(),
        }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            host: "0.0.0.0".into(),
            port: 3141,
            threads: 1024,
            read_timeout_ms: 10_000,
            write_timeout_ms: 10_000,
            cors_origin: "http://localhost:5173".into(),
            max_body_bytes: 104_857_600,
            request_timeout_ms: 120_000,
            api_keys: Vec::new(),
        }
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        WorkerSettings {
            pool_size: 3,
            rotate_threshold: 25,
            starting_port: 39000,
            health_interval_ms: 5000,
            health_timeout_ms: 2000,
            max_health_failures: 3,
            audit_interval_ms: 30_000,
            startup_timeout_ms: 30_000,
            drain_timeout_ms: 30_000,
            backoff_base_ms: 1000,
            backoff_max_ms: 60_000,
        }
    }
}

impl Default for InferenceSettings {
    fn default() -> Self {
        InferenceSettings {
            max_concurrent_inferences: 10,
            inference_timeout_ms: 30_000,
            model_cache_size: 5,
            max_queue: 64,
            queue_timeout_ms: 30_000,
            history_size: 1000,
            auto_load: false,
        }
    }
}

impl Default for RackSettings {
    fn default() -> Self {
        RackSettings {
            port: 3142,
            allow: Vec::new(),
            orchestrator_url: String::new(),
            heartbeat_ms: 10_000,
        }
    }
}

/// A settings problem the operator has to fix; `serve` and `check` exit 2 on it.
#[derive(Debug)]
pub struct SettingsError {
    /// The file at fault, when the problem is in the file rather than in env or flags.
    pub file: Option<PathBuf>,
    /// 1-based line of the offending key or syntax error, when known.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `workers.poolSize`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.file, self.line) {
            (Some(file), Some(line)) => write!(f, "{}:{}: ", file.display(), line)?,
            (Some(file), None) => write!(f, "{}: ", file.display())?,
            _ => {}
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for SettingsError {}

impl SettingsError {
    /// A problem with no file or key to point at.
    fn general(message: String) -> Self {
        SettingsError {
            file: None,
            line: None,
            key: None,
            message,
        }
    }

    fn plain(key: &str, message: impl Into<String>) -> Self {
        SettingsError {
            file: None,
            line: None,
            key: Some(key.into()),
            message: message.into(),
        }
    }
}

/// Values given on the command line; `None` means "not given".
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub host: Option<String>,
    pub port: Option<u16>,
}

/// Reads the settings file (or writes the defaults when `create_if_missing` and it is absent),
/// then applies the environment and the flags. Unknown keys are returned as warnings.
pub fn load(
    paths: &Paths,
    overrides: &Overrides,
    create_if_missing: bool,
) -> Result<(Settings, Vec<String>), SettingsError> {
    let mut warnings = Vec::new();
    let mut settings = match std::fs::read_to_string(&paths.config_file) {
        Ok(text) => parse_file(&text, &paths.config_file, &mut warnings)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if create_if_missing {
                write_defaults(&paths.config_file)?;
            }
            Settings::default()
        }
        Err(e) => {
            return Err(SettingsError {
                file: Some(paths.config_file.clone()),
                line: None,
                key: None,
                message: format!("cannot read the settings file: {e}"),
            })
        }
    };
    apply_env(&mut settings, |name| std::env::var(name).ok())?;
    apply_overrides(&mut settings, overrides);
    validate(&settings)?;
    Ok((settings, warnings))
}
/// Range checks that a type check cannot express.
fn validate(s: &Settings) -> Result<(), SettingsError> {
    let positive = [
        ("server.threads", s.server.threads as u64),
        ("server.maxBodyBytes", s.server.max_body_bytes),
        ("server.requestTimeoutMs", s.server.request_timeout_ms),
        ("server.readTimeoutMs", s.server.read_timeout_ms),
        ("server.writeTimeoutMs", s.server.write_timeout_ms),
        ("workers.poolSize", s.workers.pool_size as u64),
        ("workers.rotateThreshold", s.workers.rotate_threshold),
        ("workers.startingPort", s.workers.starting_port as u64),
        ("workers.healthIntervalMs", s.workers.health_interval_ms),
        ("workers.healthTimeoutMs", s.workers.health_timeout_ms),
        (
            "workers.maxHealthFailures",
            s.workers.max_health_failures as u64,
        ),
        ("workers.auditIntervalMs", s.workers.audit_interval_ms),
        ("workers.startupTimeoutMs", s.workers.startup_timeout_ms),
        ("workers.backoffBaseMs", s.workers.backoff_base_ms),
        ("workers.backoffMaxMs", s.workers.backoff_max_ms),
        ("inference.queueTimeoutMs", s.inference.queue_timeout_ms),
        (
            "inference.maxConcurrentInferences",
            s.inference.max_concurrent_inferences as u64,
        ),
        (
            "inference.inferenceTimeoutMs",
            s.inference.inference_timeout_ms,
        ),
        (
            "inference.modelCacheSize",
            s.inference.model_cache_size as u64,
        ),
        ("audio.chunkSeconds", s.audio.chunk_seconds),
        ("audio.maxSeconds", s.audio.max_seconds),
        ("audio.maxSecondsInMemory", s.audio.max_seconds_in_memory),
        ("audio.maxConversions", s.audio.max_conversions as u64),
        ("audio.conversionTimeoutMs", s.audio.conversion_timeout_ms),
        ("audio.chunkTimeoutFactor", s.audio.chunk_timeout_factor),
        ("audio.chunkTimeoutMinMs", s.audio.chunk_timeout_min_ms),
    ];
    if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(SettingsError::plain(key, "must be at least 1"));
    }
    if s.audio.max_seconds_in_memory < s.audio.max_seconds {
        return Err(SettingsError::plain(
            "audio.maxSecondsInMemory",
            "must be at least audio.maxSeconds, or the longest recordings allowed would never fit",
        ));
    }
    if s.server.threads < MIN_SERVER_THREADS {
        return Err(SettingsError::plain(
            "server.threads",
            format!(
                "must be at least {MIN_SERVER_THREADS} (some threads are kept for small requests)"
            ),
        ));
    }
    for (key, keys) in [
        ("server.apiKeys", &s.server.api_keys),
        ("rack.allow", &s.rack.allow),
    ] {
        if keys.iter().any(|k| k.trim().is_empty()) {
            return Err(SettingsError::plain(
                key,
                "holds an empty key; remove it (a client sends a key, never nothing)",
            ));
        }
    }
    if s.server.host.parse::<std::net::IpAddr>().is_err() && s.server.host != "localhost" {
        return Err(SettingsError::plain(
            "server.host",
            format!("`{}` is not an IP address", s.server.host),
        ));
    }
    let ws = &s.whisper_server;
    if !(0.0..=1.0).contains(&ws.no_speech_threshold) {
        return Err(SettingsError::plain(
            "whisperServer.noSpeechThreshold",
            "must be from 0 to 1",
        ));
    }
    if ws.beam_size > MAX_SEARCH_WIDTH || !(1..=MAX_SEARCH_WIDTH).contains(&ws.best_of) {
        let key = if ws.beam_size > MAX_SEARCH_WIDTH {
            "whisperServer.beamSize"
        } else {
            "whisperServer.bestOf"
        };
        return Err(SettingsError::plain(
            key,
            format!("must be at most {MAX_SEARCH_WIDTH} (and bestOf at least 1)"),
        ));
    }
    validate_models(s)?;
    if !s.default_model.is_empty() && !s.models.contains_key(&s.default_model) {
        return Err(SettingsError::plain(
            "defaultModel",
            format!("`{}` is not a key of `models`", s.default_model),
        ));
    }
    Ok(())
}

/// Every model has a worker at least, and every alias names one model and is not itself a
/// model id.
fn validate_models(s: &Settings) -> Result<(), SettingsError> {
    let mut seen = std::collections::BTreeSet::new();
    for (id, model) in &s.models {
        if model.pool_size == Some(0) {
            return Err(SettingsError::plain(
                &format!("models.{id}.poolSize"),
                "must be at least 1",
            ));
        }
        for alias in &model.aliases {
            if s.models.contains_key(alias) || !seen.insert(alias.as_str()) {
                return Err(SettingsError::plain(
                    &format!("models.{id}.aliases"),
                    format!("`{alias}` already names another model"),
                ));
            }
        }
    }
    Ok(())
}

/// The effective settings as `config show` prints them: API keys are masked so the output can
/// be pasted into a bug report.
pub fn redacted_json(settings: &Settings) -> String {
    let mut shown = settings.clone();
    shown.server.api_keys = shown
        .server
        .api_keys
        .iter()
        .map(|_| "***".to_string())
        .collect();
    shown.rack.allow = shown.rack.allow.iter().map(|_| "***".to_string()).collect();
    serde_json::to_string_pretty(&shown).expect("settings serialize")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn validation_rejects_zero_pool_and_unknown_default_model() {
        let mut s = Settings::default();
        s.workers.pool_size = 0;
        assert_eq!(
            validate(&s).unwrap_err().key.as_deref(),
            Some("workers.poolSize")
        );
        let mut s = Settings::default();
        s.models.insert(
            "a".into(),
            ModelSettings {
                path: "a.bin".into(),
                pool_size: Some(0),
                aliases: Vec::new(),
            },
        );
        assert_eq!(
            validate(&s).unwrap_err().key.as_deref(),
            Some("models.a.poolSize")
        );
        let s = Settings {
            default_model: "nope".into(),
            ..Settings::default()
        };
        assert_eq!(
            validate(&s).unwrap_err().key.as_deref(),
            Some("defaultModel")
        );
    }

    #[test]
    fn an_empty_key_is_refused() {
        let mut s = Settings::default();
        s.server.api_keys = vec!["k".into(), " ".into()];
        assert_eq!(
            validate(&s).unwrap_err().key.as_deref(),
            Some("server.apiKeys")
        );
        let mut s = Settings::default();
        s.rack.allow = vec![String::new()];
        assert_eq!(validate(&s).unwrap_err().key.as_deref(), Some("rack.allow"));
        s.rack.allow = vec!["token".into()];
        assert!(validate(&s).is_ok());
    }

    #[test]
    fn decoder_limits_and_aliases_are_checked() {
        let mut s = Settings::default();
        s.whisper_server.beam_size = MAX_SEARCH_WIDTH + 1;
        assert_eq!(
            validate(&s).unwrap_err().key.as_deref(),
            Some("whisperServer.beamSize")
        );
        let mut s = Settings::default();
        s.whisper_server.best_of = 0;
        assert_eq!(
            validate(&s).unwrap_err().key.as_deref(),
            Some("whisperServer.bestOf")
        );
        let mut s = Settings::default();
        s.whisper_server.no_speech_threshold = 1.5;
        assert!(validate(&s).is_err());
        let mut s = Settings::default();
        for (id, alias) in [("a", "shared"), ("b", "shared")] {
            s.models.insert(
                id.into(),
                ModelSettings {
                    path: format!("{id}.bin"),
                    pool_size: None,
                    aliases: vec![alias.into()],
                },
            );
        }
        assert!(validate(&s)
            .unwrap_err()
            .message
            .contains("`shared` already names another model"));
        s.models.get_mut("b").unwrap().aliases = vec!["a".into()];
        assert!(
            validate(&s).is_err(),
            "an alias may not be another model's id"
        );
    }

    #[test]
    fn a_chunks_deadline_fits_its_length_above_a_floor() {
        let audio = AudioSettings::default();
        assert_eq!(audio.chunk_timeout(30.0), Duration::from_secs(120));
        assert_eq!(audio.chunk_timeout(0.5), Duration::from_secs(10));
        let quick = AudioSettings {
            chunk_timeout_min_ms: 1500,
            ..AudioSettings::default()
        };
        assert_eq!(quick.chunk_timeout(0.1), Duration::from_millis(1500));
    }

    #[test]
    fn redaction_masks_keys() {
        let mut s = Settings::default();
        s.server.api_keys = vec!["secret".into()];
        let shown = redacted_json(&s);
        assert!(!shown.contains("secret"));
        assert!(shown.contains("***"));
    }
}
