//! The environment variables and command-line flags laid over the file (README
//! "Configuration": flag > environment > file > default).

use super::{Overrides, Settings, SettingsError};

/// Applies the environment variables (README "Configuration"). `get` is `std::env::var` in production
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
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
}
