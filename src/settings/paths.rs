//! Where this installation keeps its files: the XDG config and data directories (README
//! "Configuration").

use std::path::{Path, PathBuf};

use super::SettingsError;

/// Directory name under the XDG config and data dirs when `XDG_DIR_NAME` is not set; the name
/// the original transcription service used, so existing installs keep their files.
pub const DEFAULT_DIR_NAME: &str = "transcription_manager";

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
        let no_home = |what: &str| {
            SettingsError::general(format!(
                "cannot find the {what} directory: set HOME or XDG_{}_HOME",
                what.to_uppercase()
            ))
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
