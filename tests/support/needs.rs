//! What an `#[ignore]`d test needs from outside cargo (`.ci/run` installs all of it).
//!
//! `cargo test` leaves such a test out and says so; `cargo test -- --include-ignored` runs it,
//! and then a missing tool is a failure naming what is missing and how to get it, never a
//! pass that tested nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn missing(what: &str, how: &str) -> ! {
    panic!("an ignored test was run without what it needs: {what} (to get it: {how}; .ci/run does)")
}

/// Panics unless `name` is an executable on `PATH`; `install` says how to get it.
pub fn program(name: &str, install: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| executable(&dir.join(name))));
    if !found {
        missing(&format!("`{name}` is not on PATH"), install);
    }
}

fn executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Panics unless `python3` can import each of `modules`; `install` says how to get them.
pub fn python_modules(modules: &[&str], install: &str) {
    program("python3", "apt-get install python3");
    for module in modules {
        let imports = Command::new("python3")
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !imports {
            missing(&format!("python3 cannot import `{module}`"), install);
        }
    }
}

/// The directory holding the real `whisper-server`, `ggml-tiny.en.bin` and `jfk.wav` that
/// `scripts/setup-whisper.sh` installs: `ISM_REAL_WHISPER_DIR` when set, else where the script
/// puts them, `${XDG_DATA_HOME:-$HOME/.local/share}/${XDG_DIR_NAME:-transcription_manager}/whisper`.
/// Panics when a file is missing.
pub fn real_whisper() -> PathBuf {
    match find_real_whisper() {
        Ok(dir) => dir,
        Err(why) => missing(
            &why,
            "run scripts/setup-whisper.sh, or set ISM_REAL_WHISPER_DIR to where it installed the build",
        ),
    }
}

/// [`real_whisper`] without the panic: where the build is, or what is missing.
pub fn find_real_whisper() -> Result<PathBuf, String> {
    let (dir, from) = match non_empty("ISM_REAL_WHISPER_DIR") {
        Some(dir) => (PathBuf::from(dir), "ISM_REAL_WHISPER_DIR"),
        None => {
            let data = non_empty("XDG_DATA_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(non_empty("HOME").expect("HOME is set")).join(".local/share")
                });
            let name = non_empty("XDG_DIR_NAME").unwrap_or_else(|| "transcription_manager".into());
            (data.join(name).join("whisper"), "the default place")
        }
    };
    for file in ["whisper-server", "ggml-tiny.en.bin", "jfk.wav"] {
        if !dir.join(file).is_file() {
            return Err(format!(
                "{} is missing (the real-whisper build, looked for in {from})",
                dir.join(file).display()
            ));
        }
    }
    Ok(dir)
}

fn non_empty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}
