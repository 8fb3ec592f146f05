//! Test support, shared by every file in `tests/` (and `tests/bench/overhead.rs`).
//!
//! - [`manager`]: start the real `inference-server-manager` binary on a free port with
//!   temporary XDG dirs and the project's stub worker ([`Setup`], [`Manager`]); every
//!   `Manager` stops its process and its workers on drop, so a failing test leaves nothing
//!   running.
//! - [`http`]: one request on a fresh connection ([`request`]), raw bytes on a socket
//!   ([`raw_exchange`]), and the [`Reply`] that comes back.
//! - [`multipart`]: `multipart/form-data` bodies ([`Form`]).
//! - [`load`]: many clients at once ([`spread`]) and background loops stopped by a drop guard
//!   ([`Background`]), so a failed assertion fails the test instead of hanging it.
//! - [`process`]: a helper program (haproxy, a worker started by hand) stopped on drop, and
//!   the Python clients of `tests/clients/` run to their end ([`run_client`]).
//! - [`procfs`]: a process's open files, threads and resident memory, from `/proc`.
//! - [`needs`]: what an `#[ignore]`d test needs from outside cargo; it fails, naming what is
//!   missing, when run without it.
//!
//! Below: temporary dirs, polling, signals, and the audio the stub worker transcribes.

#![allow(dead_code)]

pub mod http;
pub mod load;
pub mod manager;
pub mod multipart;
pub mod needs;
pub mod process;
pub mod procfs;
pub mod text;

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

// One `use support::*` brings all of it; a test file that needs only some leaves the rest.
#[allow(unused_imports)]
pub use {http::*, load::*, manager::*, multipart::*, process::*, text::*};

/// Generous bound for anything that should happen "soon": the machines are shared and slow.
pub const SOON: Duration = Duration::from_secs(20);

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("ism-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A base port with room above it, found by asking the kernel for a free one.
pub fn free_port_base() -> u16 {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port < 60000 {
            return port;
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends signal `name` (`TERM`, `KILL`, `STOP`...) to `pid`; a process already gone is fine.
pub fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

pub fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; it is dead for our purpose.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

/// The `pid` of a worker entry of `/api/v1/status`.
pub fn pid_of(worker: &Value) -> u32 {
    worker["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {worker}")) as u32
}

/// Prints a line past the test harness's capture (which takes `eprintln!`), so the figures a
/// test measures show in CI's log even when it passes.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A mono 16 kHz 16-bit PCM WAV of `samples` samples, each sample `seed`-dependent so
/// different seeds give different audio (and different stub transcripts).
pub fn wav(samples: u32, seed: u16) -> Vec<u8> {
    let data_len = samples * 2;
    let mut wav = Vec::with_capacity(44 + data_len as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    for v in [
        16u32.to_le_bytes().as_slice(),
        &1u16.to_le_bytes(),
        &1u16.to_le_bytes(),
    ] {
        wav.extend_from_slice(v);
    }
    wav.extend_from_slice(&16_000u32.to_le_bytes());
    wav.extend_from_slice(&32_000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    for i in 0..samples {
        wav.extend_from_slice(&((i as u16).wrapping_mul(seed | 1)).to_le_bytes());
    }
    wav
}

/// What the stub answers for `audio`: see `fingerprint` in the stub.
pub fn stub_text(audio: &[u8]) -> String {
    let hash = audio.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("stub {} bytes {hash:016x}", audio.len())
}

/// What the stub answers for `audio` when it serves the model `id` of [`Setup::model`]: it
/// names its model file before the text.
pub fn model_text(id: &str, audio: &[u8]) -> String {
    format!("[{id}.bin] {}", stub_text(audio))
}
