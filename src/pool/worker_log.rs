//! A worker's output, timestamped into `logs/workers/worker-{port}.log`: one file per worker
//! port, shared by the pumps of its stdout and stderr, rotated past `LOG_ROTATE_BYTES`.
//!
//! A pump wakes when the worker writes, lets output gather for `GATHER`, and writes what came
//! in one go. Read line by line, a worker that prints a line per request (the stub does, and
//! whisper-server prints dozens per inference) cost the manager a wake-up, a timestamp and a
//! write per line: under load, a thread switch per request and 6-10% of its CPU.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write as _};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A worker log is renamed to `.1` (replacing the previous one) past this size, so a chatty
/// or crash-looping worker cannot fill the disk: at most twice this per port.
const LOG_ROTATE_BYTES: u64 = 10 * 1024 * 1024;

/// How long a pump lets output gather after the first byte of it: lines reach the file this
/// much later, at most 100 writes a second per stream. A worker can write a pipe's worth (64
/// KiB on Linux) meanwhile before it waits for the pump.
const GATHER: Duration = Duration::from_millis(10);

/// Output read in one gathering at most.
const MAX_GATHERED: usize = 64 * 1024;

/// The longest line kept whole: a longer one is written in pieces, so a worker printing
/// without newlines cannot grow the manager.
const MAX_LINE: usize = MAX_GATHERED;

/// One worker's log file, shared by its stdout and stderr pumps.
pub(super) struct WorkerLog {
    path: PathBuf,
    file: File,
    written: u64,
}

/// The log file of the worker on `port`, in the log directory `dir`.
pub(super) fn path(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("worker-{port}.log"))
}

impl WorkerLog {
    pub(super) fn open(dir: &Path, port: u16) -> std::io::Result<WorkerLog> {
        std::fs::create_dir_all(dir)?;
        let path = path(dir, port);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let written = file.metadata()?.len();
        Ok(WorkerLog {
            path,
            file,
            written,
        })
    }

    /// Writes each line of `lines` (without their line ends) under one timestamp, in one write.
    fn write_lines<'a>(&mut self, stream: &str, lines: impl Iterator<Item = &'a [u8]>) {
        let stamp = crate::clock::now_rfc3339();
        let mut entries = String::new();
        for line in lines {
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches(['\r', '\n']);
            let _ = writeln!(entries, "[{stamp}] [{stream}] {text}");
        }
        if entries.is_empty() {
            return;
        }
        if self.written + entries.len() as u64 > LOG_ROTATE_BYTES {
            self.rotate();
        }
        if self.file.write_all(entries.as_bytes()).is_ok() {
            self.written += entries.len() as u64;
        }
    }

    fn rotate(&mut self) {
        let old = self.path.with_extension("log.1");
        let reopened = std::fs::rename(&self.path, &old).and_then(|()| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
        });
        match reopened {
            Ok(file) => {
                self.file = file;
                self.written = 0;
            }
            Err(e) => log::warn!("cannot rotate {}: {e}", self.path.display()),
        }
    }
}

/// Copies `stream` into the log until the process closes it, then tells `on_close`.
pub(super) fn pump(
    mut stream: impl Read + AsFd + Send + 'static,
    name: &'static str,
    log: Arc<Mutex<WorkerLog>>,
    on_close: Sender<super::MonitorEvent>,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("log-{name}"))
        .spawn(move || {
            let mut pending = Pending::default();
            loop {
                let open = gather(&mut stream, &mut pending.bytes);
                let mut log = log.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
                pending.write_lines(&mut log, name, !open);
                if !open {
                    drop(log);
                    let _ = on_close.send(super::MonitorEvent::Wake);
                    return;
                }
            }
        });
    if let Err(e) = spawned {
        log::warn!("cannot start the {name} log pump: {e}");
    }
}

/// Waits for output, lets more gather for `GATHER`, and appends what came (up to
/// `MAX_GATHERED` in all) to `pending`. Returns false once the stream is closed.
fn gather(stream: &mut (impl Read + AsFd), pending: &mut Vec<u8>) -> bool {
    if !read_some(stream, pending) {
        return false;
    }
    std::thread::sleep(GATHER);
    while pending.len() < MAX_GATHERED && readable_now(stream) {
        if !read_some(stream, pending) {
            return false;
        }
    }
    true
}

/// One read, blocking until something comes; false at the end of the stream (or an error).
fn read_some(stream: &mut impl Read, pending: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    let room = MAX_GATHERED
        .saturating_sub(pending.len())
        .clamp(1, chunk.len());
    loop {
        match stream.read(&mut chunk[..room]) {
            Ok(0) => return false,
            Ok(n) => {
                pending.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Whether a read would return at once (data, or the end of the stream).
fn readable_now(stream: &impl AsFd) -> bool {
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// What a pump has read and not written yet.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// The start of the line at the front was written already, cut at `MAX_LINE`: its line
    /// end, when it comes, ends that entry and is no empty line of its own.
    cut: bool,
}

impl Pending {
    /// Writes the complete lines, and the unfinished last one too when it is `last` or too
    /// long to wait for (cut where no character is split); keeps the rest.
    fn write_lines(&mut self, log: &mut WorkerLog, stream: &str, last: bool) {
        if std::mem::take(&mut self.cut) {
            let line_end = [b"\r\n".as_slice(), b"\n"]
                .into_iter()
                .find(|end| self.bytes.starts_with(end));
            self.bytes.drain(..line_end.map_or(0, <[u8]>::len));
        }
        let complete = self
            .bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1);
        let upto = if last {
            self.bytes.len()
        } else if self.bytes.len() - complete >= MAX_LINE {
            self.cut = true;
            complete + whole_characters(&self.bytes[complete..])
        } else {
            complete
        };
        log.write_lines(stream, self.bytes[..upto].split_inclusive(|&b| b == b'\n'));
        self.bytes.drain(..upto);
    }
}

/// How much of `text` to write so that no UTF-8 character is split: all of it but an
/// unfinished character at the end.
fn whole_characters(text: &[u8]) -> usize {
    match std::str::from_utf8(text) {
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        _ => text.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_log(name: &str) -> (PathBuf, WorkerLog) {
        let dir = std::env::temp_dir().join(format!("ism-log-{name}-{}", std::process::id()));
        let log = WorkerLog::open(&dir, 1).unwrap();
        (dir, log)
    }

    fn read(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("worker-1.log")).unwrap()
    }

    /// The text of each line logged, without its timestamp and stream.
    fn logged(dir: &Path) -> Vec<String> {
        read(dir)
            .lines()
            .map(|l| l.split_once("] [stdout] ").unwrap().1.to_string())
            .collect()
    }

    #[test]
    fn log_lines_are_timestamped_and_rotated() {
        let (dir, mut log) = temp_log("rotate");
        log.write_lines("stdout", [b"hello\n".as_slice()].into_iter());
        let text = read(&dir);
        assert!(
            text.starts_with('[') && text.ends_with("] [stdout] hello\n"),
            "{text}"
        );
        log.written = LOG_ROTATE_BYTES;
        log.write_lines("stderr", [b"after rotation".as_slice()].into_iter());
        assert!(dir.join("worker-1.log.1").exists());
        let text = read(&dir);
        assert!(text.contains("[stderr] after rotation") && !text.contains("hello"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `bytes` written as a pump would, after what `pending` holds.
    fn write(log: &mut WorkerLog, pending: &mut Pending, bytes: &[u8], last: bool) {
        pending.bytes.extend_from_slice(bytes);
        pending.write_lines(log, "stdout", last);
    }

    #[test]
    fn an_unfinished_line_waits_for_its_end_unless_it_is_the_last() {
        let (dir, mut log) = temp_log("partial");
        let mut pending = Pending::default();
        write(&mut log, &mut pending, b"one\r\ntwo\nthr", false);
        assert_eq!(pending.bytes, b"thr");
        assert_eq!(logged(&dir), ["one", "two"]);
        write(&mut log, &mut pending, b"ee", true);
        assert!(pending.bytes.is_empty());
        assert_eq!(logged(&dir), ["one", "two", "three"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_endless_line_is_written_in_pieces_cut_between_characters() {
        let (dir, mut log) = temp_log("endless");
        let mut pending = Pending::default();
        // A gathering full of one line, ending in the first byte of an "é".
        let mut endless = vec![b'x'; MAX_LINE - 1];
        endless.push(0xc3);
        write(&mut log, &mut pending, &endless, false);
        assert_eq!(pending.bytes, [0xc3], "the character's first byte waits");
        write(&mut log, &mut pending, &[0xa9, b'\n', b'\n', b'n'], true);
        let lines = logged(&dir);
        assert_eq!(lines.len(), 4, "{:?}", &lines[1..]);
        assert_eq!(lines[0].len(), MAX_LINE - 1);
        assert_eq!(lines[1..], ["é", "", "n"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_line_end_after_a_cut_makes_no_empty_entry() {
        let (dir, mut log) = temp_log("cut");
        let mut pending = Pending::default();
        write(&mut log, &mut pending, &vec![b'x'; MAX_LINE], false);
        write(&mut log, &mut pending, b"\r\nnext\n", false);
        let lines = logged(&dir);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], "next");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_pump_writes_what_a_process_prints_and_hears_it_close() {
        let (dir, log) = temp_log("pump");
        let mut child = std::process::Command::new("sh")
            .args(["-c", "echo first; printf 'second\\nno newline'"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let (closed, on_close) = std::sync::mpsc::channel();
        pump(
            child.stdout.take().unwrap(),
            "stdout",
            Arc::new(Mutex::new(log)),
            closed,
        );
        on_close.recv_timeout(Duration::from_secs(10)).unwrap();
        child.wait().unwrap();
        assert_eq!(logged(&dir), ["first", "second", "no newline"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
