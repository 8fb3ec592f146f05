//! The manager's own log: one line per record on stderr, at `LOG_LEVEL` (default `info`).
//! Worker output never comes here; it goes to the per-worker files (see `pool::process`).
//!
//! Writing never blocks the caller: a record becomes a line in a bounded queue, and one
//! `log` thread writes the queue to stderr. When stderr does not keep up (a pipe nobody
//! reads, a stalled terminal) the queue fills and further lines are dropped and counted
//! (`dropped_lines`, `ism_log_lines_dropped_total` in `/metrics`), so a request thread or the
//! pool never waits for the log. Control characters in a message (a line break or a terminal
//! escape a client put in a path, say) are written escaped, so one record is one line and no
//! client can forge a line or colour the operator's terminal.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use log::{Level, LevelFilter, Log, Metadata, Record};

/// Lines the queue holds: a burst of this many is written late rather than lost. About 0.5 MB
/// at most.
const QUEUE_LINES: usize = 4096;

/// How long the `log` thread lets lines gather after the first before writing them all in one
/// go: a busy service costs the thread one wake-up and one write per interval rather than per
/// line (an access-log line per request), and a line waits at most this long.
const GATHER: Duration = Duration::from_millis(10);

/// Longest `flush` waits for the queue to be written at exit.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// Libraries that log every connection at debug: noise for an operator.
const QUIET_TARGETS: &[&str] = &["tiny_http", "ureq"];

static DROPPED: AtomicU64 = AtomicU64::new(0);
static QUEUE: OnceLock<SyncSender<Line>> = OnceLock::new();

enum Line {
    Text(String),
    /// Answered once every line before it is written.
    Flush(SyncSender<()>),
}

struct QueueLogger {
    level: LevelFilter,
}

impl Log for QueueLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= self.level
            && !QUIET_TARGETS
                .iter()
                .any(|t| metadata.target().starts_with(t))
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let Some(queue) = QUEUE.get() else {
            return;
        };
        let line = format_line(
            &crate::clock::now_rfc3339(),
            record.level(),
            &record.args().to_string(),
        );
        if let Err(TrySendError::Full(_)) = queue.try_send(Line::Text(line)) {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

/// `<time> [LEVEL] message`, with the message's control characters escaped.
fn format_line(time: &str, level: Level, message: &str) -> String {
    let mut line = String::with_capacity(time.len() + message.len() + 10);
    let _ = write!(line, "{time} [{level}] ");
    for c in message.chars() {
        match c {
            '\n' => line.push_str("\\n"),
            '\r' => line.push_str("\\r"),
            '\t' => line.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(line, "\\u{{{:x}}}", c as u32);
            }
            c => line.push(c),
        }
    }
    line.push('\n');
    line
}

/// Lines dropped because stderr did not keep up, since start.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Installs the logger at the level `LOG_LEVEL` names. An unknown value is reported and `info`
/// used, since refusing to start over a log level would be out of proportion.
pub fn init(level: Option<&str>) {
    let (filter, unknown) = match level.map(|l| l.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("info") => (LevelFilter::Info, None),
        Some("error") => (LevelFilter::Error, None),
        Some("warn") => (LevelFilter::Warn, None),
        Some("debug") => (LevelFilter::Debug, None),
        Some("trace") => (LevelFilter::Trace, None),
        Some(other) => (LevelFilter::Info, Some(other.to_string())),
    };
    let (tx, rx) = sync_channel(QUEUE_LINES);
    if QUEUE.set(tx).is_err() {
        return;
    }
    let writer = std::thread::Builder::new()
        .name("log".into())
        .spawn(move || write_lines(&rx));
    if writer.is_err()
        || log::set_logger(Box::leak(Box::new(QueueLogger { level: filter }))).is_err()
    {
        return;
    }
    log::set_max_level(filter);
    if let Some(other) = unknown {
        log::warn!("LOG_LEVEL `{other}` is not one of error|warn|info|debug|trace; using info");
    }
}

/// The `log` thread: writes the lines gathered over `GATHER` to stderr in one write. While it
/// sleeps, a request thread queueing a line wakes nobody.
fn write_lines(lines: &Receiver<Line>) {
    let stderr = std::io::stderr();
    let mut text = String::new();
    let mut flushes = Vec::new();
    while let Ok(first) = lines.recv() {
        if matches!(first, Line::Text(_)) {
            std::thread::sleep(GATHER);
        }
        for line in std::iter::once(first).chain(lines.try_iter()) {
            match line {
                Line::Text(line) => text.push_str(&line),
                Line::Flush(done) => flushes.push(done),
            }
        }
        let _ = stderr.lock().write_all(text.as_bytes());
        text.clear();
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Waits (up to `FLUSH_LIMIT`) until every line logged so far is written: before the process
/// exits, or prints to stderr itself.
pub fn flush() {
    let Some(queue) = QUEUE.get() else {
        return;
    };
    let (done, written) = sync_channel(1);
    let deadline = Instant::now() + FLUSH_LIMIT;
    let mut marker = Line::Flush(done);
    loop {
        match queue.try_send(marker) {
            Ok(()) => break,
            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                marker = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => return,
        }
    }
    let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_so_a_record_is_one_line() {
        let line = format_line(
            "T",
            Level::Info,
            "GET /x\nFAKE-LOG-LINE\x1b[31mRED\r\t\u{7f}\u{9b} 200",
        );
        assert_eq!(
            line,
            "T [INFO] GET /x\\nFAKE-LOG-LINE\\u{1b}[31mRED\\r\\t\\u{7f}\\u{9b} 200\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }
}
