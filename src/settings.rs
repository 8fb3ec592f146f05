//! Settings: the JSON5 file, the environment and the command-line flags, merged in that order
//! of increasing precedence over built-in defaults (SPEC section 3).
//!
//! Loading goes through `serde_json::Value` rather than straight into the structs so that a
//! wrong type can be reported as `file:line: key` and an unknown key can be warned about and
//! skipped instead of refusing to start.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Directory name under the XDG config and data dirs when `XDG_DIR_NAME` is not set; the name
/// the original transcription service used, so existing installs keep their files.
pub const DEFAULT_DIR_NAME: &str = "transcription_manager";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Settings {
    pub server: ServerSettings,
    pub workers: WorkerSettings,
    pub whisper_server: WhisperServerSettings,
    pub models: BTreeMap<String, ModelSettings>,
    pub default_model: String,
    pub inference: InferenceSettings,
    pub rack: RackSettings,
    pub editor: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct ServerSettings {
    pub host: String,
    pub port: u16,
    /// Fixed number of request threads. A stalled upload parks one of them, so the default
    /// is generous: a parked thread costs a small stack and nothing else.
    pub threads: usize,
    pub cors_origin: String,
    pub max_body_bytes: u64,
    pub request_timeout_ms: u64,
    pub api_keys: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerSettings {
    pub pool_size: usize,
    pub rotate_threshold: u64,
    pub starting_port: u16,
    pub health_interval_ms: u64,
    pub health_timeout_ms: u64,
    pub max_health_failures: u32,
    pub audit_interval_ms: u64,
    pub startup_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct WhisperServerSettings {
    pub cmd: String,
    pub cwd: String,
    pub args: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ModelSettings {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool_size: Option<usize>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct InferenceSettings {
    pub max_concurrent_inferences: usize,
    pub inference_timeout_ms: u64,
    pub model_cache_size: usize,
    pub max_queue: usize,
    pub queue_timeout_ms: u64,
    pub history_size: usize,
    pub auto_load: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct RackSettings {
    pub port: u16,
    pub allow: Vec<String>,
    pub orchestrator_url: String,
    pub heartbeat_ms: u64,
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
            threads: 64,
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

/// Where this installation keeps its files (SPEC section 3).
#[derive(Clone, Debug)]
pub struct Paths {
    pub config_file: PathBuf,
    /// `<XDG data dir>/<XDG_DIR_NAME>`: worker logs, pid records, the real whisper build.
    pub data_dir: PathBuf,
}

impl Paths {
    /// Resolves the XDG locations from the environment (`XDG_CONFIG_HOME`, `XDG_DATA_HOME`,
    /// `XDG_DIR_NAME`), or `config_override` for the file.
    pub fn resolve(config_override: Option<&Path>) -> Result<Paths, SettingsError> {
        let dir_name = std::env::var("XDG_DIR_NAME")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| DEFAULT_DIR_NAME.to_string());
        let no_home = |what: &str| SettingsError {
            file: None,
            line: None,
            key: None,
            message: format!(
                "cannot find the {what} directory: set HOME or XDG_{}_HOME",
                what.to_uppercase()
            ),
        };
        let config_file = match config_override {
            Some(path) => path.to_path_buf(),
            None => dirs::config_dir()
                .ok_or_else(|| no_home("config"))?
                .join(&dir_name)
                .join("settings.json5"),
        };
        let data_dir = dirs::data_dir()
            .ok_or_else(|| no_home("data"))?
            .join(&dir_name);
        Ok(Paths {
            config_file,
            data_dir,
        })
    }

    pub fn worker_log_dir(&self) -> PathBuf {
        self.data_dir.join("logs").join("workers")
    }

    pub fn pid_dir(&self) -> PathBuf {
        self.data_dir.join("pids")
    }

    /// The whisper-server that `scripts/setup-whisper.sh` builds.
    pub fn bundled_whisper_server(&self) -> PathBuf {
        self.data_dir.join("whisper").join("whisper-server")
    }

    /// The ggml model that `scripts/setup-whisper.sh` converts.
    pub fn bundled_model(&self) -> PathBuf {
        self.data_dir.join("whisper").join("ggml-tiny.en.bin")
    }
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

/// Writes the default settings to `path`, creating its directory. Used by `serve` on first run
/// and by `config init`.
pub fn write_defaults(path: &Path) -> Result<(), SettingsError> {
    let fail = |e: std::io::Error| SettingsError {
        file: Some(path.to_path_buf()),
        line: None,
        key: None,
        message: format!("cannot write the default settings: {e}"),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(fail)?;
    }
    std::fs::write(path, default_file_text()).map_err(fail)
}

/// The defaults as a commented JSON5 file; JSON is valid JSON5, so the body is the serialized
/// defaults and stays in step with the structs by construction.
pub fn default_file_text() -> String {
    let body = serde_json::to_string_pretty(&Settings::default()).expect("defaults serialize");
    format!(
        "// inference-server-manager settings (JSON5: comments and trailing commas are fine).\n\
         // Precedence: command-line flag > environment variable > this file > built-in default.\n\
         // Set whisperServer.cmd to your whisper-server binary, or run scripts/setup-whisper.sh.\n\
         {body}\n"
    )
}

/// Parses the file text, checks every key against the defaults' shape, and deserializes;
/// unknown keys are added to `warnings`. (`load` without the file system, and a fuzz target.)
pub fn parse_file(
    text: &str,
    file: &Path,
    warnings: &mut Vec<String>,
) -> Result<Settings, SettingsError> {
    let user: Value = json5::from_str(text).map_err(|e| SettingsError {
        file: Some(file.to_path_buf()),
        line: e.position().map(|p| p.line + 1),
        key: None,
        message: format!("not valid JSON5: {e}"),
    })?;
    let defaults = serde_json::to_value(Settings::default()).expect("defaults serialize");
    let mut problems = Vec::new();
    check_shape(&user, &defaults, "", &mut problems);
    for problem in problems {
        let line = line_of_key(text, &problem.path);
        match problem.kind {
            ProblemKind::Unknown => warnings.push(format!(
                "{}:{}: unknown key `{}` is ignored",
                file.display(),
                line.map_or_else(|| "?".to_string(), |l| l.to_string()),
                problem.path
            )),
            ProblemKind::WrongType(expected) => {
                return Err(SettingsError {
                    file: Some(file.to_path_buf()),
                    line,
                    key: Some(problem.path),
                    message: format!("expected {expected}"),
                })
            }
        }
    }
    let user = strip_unknown(user, &defaults);
    serde_json::from_value(user).map_err(|e| SettingsError {
        file: Some(file.to_path_buf()),
        line: None,
        key: None,
        message: e.to_string(),
    })
}

struct Problem {
    path: String,
    kind: ProblemKind,
}

enum ProblemKind {
    Unknown,
    WrongType(&'static str),
}

fn join_path(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// Walks `user` alongside `defaults` and records unknown keys and values of the wrong kind.
/// `models` is a free-form map whose entries are checked against `ModelSettings`.
fn check_shape(user: &Value, defaults: &Value, path: &str, problems: &mut Vec<Problem>) {
    let (Value::Object(user), Value::Object(defaults)) = (user, defaults) else {
        return;
    };
    for (key, value) in user {
        let key_path = join_path(path, key);
        if path.is_empty() && key == "models" {
            check_models(value, &key_path, problems);
            continue;
        }
        let Some(default) = defaults.get(key) else {
            problems.push(Problem {
                path: key_path,
                kind: ProblemKind::Unknown,
            });
            continue;
        };
        if let Some(expected) = kind_mismatch(value, default) {
            problems.push(Problem {
                path: key_path,
                kind: ProblemKind::WrongType(expected),
            });
        } else if value.is_object() {
            check_shape(value, default, &key_path, problems);
        }
    }
}

fn check_models(models: &Value, path: &str, problems: &mut Vec<Problem>) {
    let Value::Object(models) = models else {
        problems.push(Problem {
            path: path.into(),
            kind: ProblemKind::WrongType("an object of id -> { path, poolSize? }"),
        });
        return;
    };
    for (id, model) in models {
        let model_path = join_path(path, id);
        let Value::Object(fields) = model else {
            problems.push(Problem {
                path: model_path,
                kind: ProblemKind::WrongType("an object { path, poolSize? }"),
            });
            continue;
        };
        if !fields.get("path").is_some_and(Value::is_string) {
            problems.push(Problem {
                path: join_path(&model_path, "path"),
                kind: ProblemKind::WrongType("a string"),
            });
        }
        for (key, value) in fields {
            match key.as_str() {
                "path" => {}
                "poolSize" if value.as_u64().is_some_and(|n| n >= 1) => {}
                "poolSize" => problems.push(Problem {
                    path: join_path(&model_path, key),
                    kind: ProblemKind::WrongType("a whole number of at least 1"),
                }),
                _ => problems.push(Problem {
                    path: join_path(&model_path, key),
                    kind: ProblemKind::Unknown,
                }),
            }
        }
    }
}

/// What `value` should have been, if it is not of the same kind as `default`.
fn kind_mismatch(value: &Value, default: &Value) -> Option<&'static str> {
    match default {
        Value::Bool(_) if !value.is_boolean() => Some("true or false"),
        Value::String(_) if !value.is_string() => Some("a string"),
        Value::Number(_) if value.as_u64().is_none() => Some("a whole number of 0 or more"),
        Value::Array(_)
            if !value
                .as_array()
                .is_some_and(|a| a.iter().all(Value::is_string)) =>
        {
            Some("a list of strings")
        }
        Value::Object(_) if !value.is_object() => Some("an object"),
        _ => None,
    }
}

/// Drops the keys that `check_shape` warned about, so deserialization sees only known ones.
fn strip_unknown(user: Value, defaults: &Value) -> Value {
    let (Value::Object(user), Value::Object(defaults)) = (user, defaults) else {
        return Value::Null;
    };
    let kept = user
        .into_iter()
        .filter_map(|(key, value)| {
            if key == "models" {
                return Some((key, strip_unknown_models(value)));
            }
            let default = defaults.get(&key)?;
            let value = if default.is_object() {
                strip_unknown(value, default)
            } else {
                value
            };
            Some((key, value))
        })
        .collect();
    Value::Object(kept)
}

fn strip_unknown_models(models: Value) -> Value {
    let Value::Object(models) = models else {
        return models;
    };
    let kept = models
        .into_iter()
        .map(|(id, model)| {
            let model = match model {
                Value::Object(fields) => Value::Object(
                    fields
                        .into_iter()
                        .filter(|(k, _)| k == "path" || k == "poolSize")
                        .collect(),
                ),
                other => other,
            };
            (id, model)
        })
        .collect();
    Value::Object(kept)
}

/// Best-effort 1-based line of a dotted key in the JSON5 text: each segment is searched for
/// after the line of its parent, written bare, in double or in single quotes.
fn line_of_key(text: &str, dotted: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    for segment in dotted.split('.') {
        let forms = [
            format!("{segment}:"),
            format!("\"{segment}\""),
            format!("'{segment}'"),
        ];
        let found = (from..lines.len()).find(|&i| {
            let line = lines[i];
            forms.iter().any(|form| {
                line.match_indices(form.as_str()).any(|(at, _)| {
                    let before = line[..at].chars().next_back();
                    !before.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            })
        })?;
        from = found;
    }
    Some(from + 1)
}

/// Applies the environment variables of SPEC section 3. `get` is `std::env::var` in production
/// and a map in tests.
pub fn apply_env(
    settings: &mut Settings,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(), SettingsError> {
    let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    if let Some((name, port)) = ["INFERENCE_SERVER_PORT", "TRANSCRIPTION_MANAGER_PORT"]
        .into_iter()
        .find_map(|name| get(name).map(|v| (name, v)))
    {
        settings.server.port = port.trim().parse().map_err(|_| {
            SettingsError::plain(name, format!("`{port}` is not a port number (0-65535)"))
        })?;
    }
    if let Some(host) = get("INFERENCE_SERVER_HOST") {
        settings.server.host = host;
    }
    if let Some(cmd) = get("WHISPER_SERVER_CMD") {
        settings.whisper_server.cmd = cmd;
    }
    if let Some(cwd) = get("WHISPER_SERVER_CWD") {
        settings.whisper_server.cwd = cwd;
    }
    if let Some(args) = get("WHISPER_SERVER_ARGS") {
        settings.whisper_server.args = args.split_whitespace().map(String::from).collect();
    }
    if let Some(origin) = get("CORS_ORIGIN") {
        settings.server.cors_origin = origin;
    }
    if let Some(keys) = get("INFERENCE_SERVER_API_KEYS") {
        settings.server.api_keys = keys
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect();
    }
    Ok(())
}

pub fn apply_overrides(settings: &mut Settings, overrides: &Overrides) {
    if let Some(host) = &overrides.host {
        settings.server.host = host.clone();
    }
    if let Some(port) = overrides.port {
        settings.server.port = port;
    }
}

/// Range checks that a type check cannot express.
fn validate(s: &Settings) -> Result<(), SettingsError> {
    let positive = [
        ("server.threads", s.server.threads as u64),
        ("server.maxBodyBytes", s.server.max_body_bytes),
        ("server.requestTimeoutMs", s.server.request_timeout_ms),
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
    ];
    if let Some((key, _)) = positive.iter().find(|(_, v)| *v == 0) {
        return Err(SettingsError::plain(key, "must be at least 1"));
    }
    if s.server.threads < crate::http::MIN_THREADS {
        return Err(SettingsError::plain(
            "server.threads",
            format!(
                "must be at least {} (some threads are kept for small requests)",
                crate::http::MIN_THREADS
            ),
        ));
    }
    if s.server.host.parse::<std::net::IpAddr>().is_err() && s.server.host != "localhost" {
        return Err(SettingsError::plain(
            "server.host",
            format!("`{}` is not an IP address", s.server.host),
        ));
    }
    if !s.default_model.is_empty() && !s.models.contains_key(&s.default_model) {
        return Err(SettingsError::plain(
            "defaultModel",
            format!("`{}` is not a key of `models`", s.default_model),
        ));
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

    fn parse(text: &str) -> Result<(Settings, Vec<String>), SettingsError> {
        let mut warnings = Vec::new();
        parse_file(text, Path::new("/etc/s.json5"), &mut warnings).map(|s| (s, warnings))
    }

    #[test]
    fn default_file_parses_back_to_the_defaults() {
        let (settings, warnings) = parse(&default_file_text()).unwrap();
        assert_eq!(settings, Settings::default());
        assert!(warnings.is_empty());
    }

    #[test]
    fn json5_comments_and_partial_sections_keep_other_defaults() {
        let (settings, _) = parse("{ // comment\n workers: { poolSize: 2, },\n}").unwrap();
        assert_eq!(settings.workers.pool_size, 2);
        assert_eq!(settings.workers.rotate_threshold, 25);
        assert_eq!(settings.server.port, 3141);
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let err = parse("{\n  server: {\n    host: \"127.0.0.1\",\n    port: \"eighty\",\n  },\n}")
            .unwrap_err();
        assert_eq!(err.line, Some(4));
        assert_eq!(err.key.as_deref(), Some("server.port"));
        assert_eq!(
            err.to_string(),
            "/etc/s.json5:4: server.port: expected a whole number of 0 or more"
        );
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = parse("{\n  server: {\n    port: 80,,\n  }\n}").unwrap_err();
        assert_eq!(err.line, Some(3));
    }

    #[test]
    fn unknown_keys_warn_and_are_ignored() {
        let (settings, warnings) =
            parse("{\n server: { port: 81, colour: 'blue' },\n extra: 1 }").unwrap();
        assert_eq!(settings.server.port, 81);
        assert_eq!(warnings.len(), 2);
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(":2: unknown key `server.colour`")),
            "{warnings:?}"
        );
        assert!(
            warnings
                .iter()
                .any(|w| w.contains(":3: unknown key `extra`")),
            "{warnings:?}"
        );
    }

    #[test]
    fn models_entries_are_checked() {
        let (settings, _) =
            parse("{ models: { base: { path: 'm/base.bin', poolSize: 2 } } }").unwrap();
        assert_eq!(settings.models["base"].pool_size, Some(2));
        let err = parse("{ models: { base: { path: 3 } } }").unwrap_err();
        assert_eq!(err.key.as_deref(), Some("models.base.path"));
    }

    #[test]
    fn port_out_of_range_is_a_settings_error() {
        assert!(parse("{ server: { port: 70000 } }").is_err());
    }

    #[test]
    fn env_overrides_file_and_legacy_port_is_honoured() {
        let mut settings = Settings::default();
        let env: BTreeMap<&str, &str> = [
            ("TRANSCRIPTION_MANAGER_PORT", "4000"),
            ("WHISPER_SERVER_ARGS", " -m  model.bin  --flag "),
            ("INFERENCE_SERVER_API_KEYS", "a, b,,"),
        ]
        .into();
        apply_env(&mut settings, |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(settings.server.port, 4000);
        assert_eq!(settings.whisper_server.args, ["-m", "model.bin", "--flag"]);
        assert_eq!(settings.server.api_keys, ["a", "b"]);
    }

    #[test]
    fn new_port_variable_wins_over_legacy() {
        let mut settings = Settings::default();
        let env: BTreeMap<&str, &str> = [
            ("TRANSCRIPTION_MANAGER_PORT", "4000"),
            ("INFERENCE_SERVER_PORT", "5000"),
        ]
        .into();
        apply_env(&mut settings, |k| env.get(k).map(|v| v.to_string())).unwrap();
        assert_eq!(settings.server.port, 5000);
    }

    #[test]
    fn flags_win_over_env() {
        let mut settings = Settings::default();
        apply_env(&mut settings, |k| {
            (k == "INFERENCE_SERVER_PORT").then(|| "5000".into())
        })
        .unwrap();
        apply_overrides(
            &mut settings,
            &Overrides {
                host: None,
                port: Some(6000),
            },
        );
        assert_eq!(settings.server.port, 6000);
    }

    #[test]
    fn validation_rejects_zero_pool_and_unknown_default_model() {
        let mut s = Settings::default();
        s.workers.pool_size = 0;
        assert_eq!(
            validate(&s).unwrap_err().key.as_deref(),
            Some("workers.poolSize")
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
    fn redaction_masks_keys() {
        let mut s = Settings::default();
        s.server.api_keys = vec!["secret".into()];
        let shown = redacted_json(&s);
        assert!(!shown.contains("secret"));
        assert!(shown.contains("***"));
    }
}
