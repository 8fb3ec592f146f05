//! Any audio (or the audio track of a video) to 16 kHz mono [`Pcm`] through `ffmpeg`, run as a
//! child process with its arguments as a vector, never through a shell.
//!
//! One conversion: the upload goes to ffmpeg's stdin from a thread of its own while the calling
//! thread waits for a second one reading stdout (raw `s16le` samples, counted against
//! `max_seconds`) and a third keeps stderr, bounded, for the error message. All three pipes are
//! drained at once, so neither side can block on a full pipe. ffmpeg runs in a process group
//! of its own; on the wall-clock limit, on too much output, or on a failure on our side the
//! whole group is sent SIGKILL and the child is reaped before the call returns, so no process
//! or zombie outlives it.
//!
//! What ffmpeg may touch: its input is `pipe:0` with `-protocol_whitelist pipe`, so a container
//! that names other resources (an HLS playlist, an ffconcat list, a DASH manifest) cannot make
//! it open a file or a URL: every protocol but `pipe` is refused. That leaves `pipe:N`, which
//! reads any descriptor ffmpeg inherited (an ffconcat line `file 3` does, tried by hand), and
//! std cannot close inherited descriptors in the child without `unsafe`. So `-format_whitelist`
//! also limits ffmpeg to the audio and video containers in [`FORMATS`]: the demuxers that open
//! other resources (hls, dash, concat, imf) are not among them, and a playlist is refused
//! before anything in it is read. The list also keeps the other 300 demuxers (images,
//! subtitles, game formats, devices), each a parser exposed to uploads, out of reach.
//! `FFREPORT` is removed from ffmpeg's environment so it writes no report file.
//!
//! An MP4/M4A/MOV whose index (`moov`) follows the samples (`mdat`), as ffmpeg itself and many
//! recorders write them, cannot be demuxed from a pipe, which cannot seek back. [`Ffmpeg::decode`]
//! moves the index to the front first (`audio::mp4`), rather than giving ffmpeg a seekable
//! temporary file and, with it, the `file` protocol.
//!
//! At most `max_at_once` conversions run at once: they are CPU-bound and share the machine with
//! the workers. A conversion past the cap waits for a permit up to `queue_wait` (default
//! [`DEFAULT_QUEUE_WAIT`]) and is then refused with [`ConvertError::Busy`]: waiting a little
//! absorbs a burst (a typical upload converts in well under a second) without letting the queue
//! hold request threads for as long as conversions may take.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};

use super::mp4::faststart;
use nix::unistd::Pid;

use super::pcm::Pcm;

/// How long a conversion waits for a permit before [`ConvertError::Busy`], unless
/// [`Ffmpeg::with_queue_wait`] says otherwise.
/// An hour of 44.1 kHz stereo AAC converts in about 3.5 s on one core here, a few minutes of
/// audio in a fraction of a second: 10 s lets several long uploads a permit go first.
pub const DEFAULT_QUEUE_WAIT: Duration = Duration::from_secs(10);

/// The longest `ffmpeg -version` may take when [`Ffmpeg::find`] checks the program.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes of ffmpeg's stderr kept from its start and from its end (a corrupt stream can make
/// it print a line per packet; only the first and last lines make the message).
const STDERR_KEEP: usize = 4096;

/// Longest reason [`ConvertError::Undecodable`] carries.
const REASON_CHARS: usize = 300;

/// The demuxers ffmpeg may pick for an upload (`-format_whitelist`): the containers audio and
/// the audio of video arrive in, phones' and dictation machines' formats included. Not here:
/// those that open other resources (hls, dash, concat, imf, webm_dash_manifest), raw sample
/// formats (never probed anyway), images, subtitles, devices, games' formats. `mov` stands
/// for mov/mp4/m4a/3gp, `matroska` for mkv/webm, `asf` for wma/wmv, `wav` for RF64 too.
pub const FORMATS: &str = "aac,ac3,aiff,amr,amrnb,amrwb,ape,asf,au,avi,caf,dsf,dts,dtshd,dv,\
    eac3,flac,flv,gsm,iff,ilbc,ircam,loas,matroska,mlp,mmf,mov,mp3,mpc,mpc8,mpeg,mpegts,mxf,\
    nistsphere,nut,ogg,oma,qcp,rm,shn,sox,tak,truehd,tta,voc,w64,wav,wtv,wv,xwma";

/// ffmpeg's arguments: input from stdin with only the `pipe` protocol and the [`FORMATS`]
/// allowed; output the audio stream it picks, as 16 kHz mono signed 16-bit little-endian
/// samples on stdout.
const ARGS: &[&str] = &[
    "-hide_banner",
    "-nostdin",
    "-nostats",
    "-loglevel",
    "error",
    "-protocol_whitelist",
    "pipe",
    "-format_whitelist",
    FORMATS,
    "-i",
    "pipe:0",
    "-vn",
    "-sn",
    "-dn",
    "-f",
    "s16le",
    "-ac",
    "1",
    "-ar",
    "16000",
    "pipe:1",
];

/// Why the `audio.ffmpeg` setting names nothing usable: for the start-up log and `check`.
#[derive(Debug)]
pub enum FfmpegError {
    /// A bare program name that no `PATH` directory holds.
    NotOnPath(String),
    /// The path exists but is not an executable file.
    NotExecutable(PathBuf),
    /// The path could not be read (missing, no permission).
    Unreadable { path: PathBuf, source: io::Error },
    /// The operating system refused to start it.
    Start { program: PathBuf, source: io::Error },
    /// It started, but `-version` failed, hung, or did not print `ffmpeg version ...`.
    Version { program: PathBuf, reason: String },
}

impl fmt::Display for FfmpegError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FfmpegError::NotOnPath(name) => write!(f, "`{name}` is not on PATH"),
            FfmpegError::NotExecutable(path) => {
                write!(f, "{} is not an executable file", path.display())
            }
            FfmpegError::Unreadable { path, source } => write!(f, "{}: {source}", path.display()),
            FfmpegError::Start { program, source } => {
                write!(f, "cannot start {}: {source}", program.display())
            }
            FfmpegError::Version { program, reason } => {
                write!(f, "{} does not work as ffmpeg: {reason}", program.display())
            }
        }
    }
}

impl std::error::Error for FfmpegError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FfmpegError::Unreadable { source, .. } | FfmpegError::Start { source, .. } => {
                Some(source)
            }
            _ => None,
        }
    }
}

/// Why one conversion failed.
#[derive(Debug)]
pub enum ConvertError {
    /// ffmpeg could not read the input: its one-line reason (for a 400 or 415).
    Undecodable(String),
    /// The audio runs past `limit` seconds; decoding stopped at `seconds`.
    TooLong { seconds: f64, limit: f64 },
    /// The conversion ran past the wall-clock limit and was killed.
    Timeout(Duration),
    /// All permits were taken for longer than the queue wait (a 503).
    Busy,
    /// Ours, not the input's: the process could not be run, was killed by a signal, or the
    /// input could not be read.
    Io(io::Error),
}

impl fmt::Display for ConvertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConvertError::Undecodable(reason) => {
                write!(f, "ffmpeg cannot decode the audio: {reason}")
            }
            ConvertError::TooLong { limit, .. } => {
                write!(f, "the audio is longer than the limit of {limit} s")
            }
            ConvertError::Timeout(after) => write!(
                f,
                "converting the audio took longer than {} s",
                after.as_secs_f64()
            ),
            ConvertError::Busy => write!(f, "too many audio conversions at once; try again"),
            ConvertError::Io(e) => write!(f, "running ffmpeg failed: {e}"),
        }
    }
}

impl std::error::Error for ConvertError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConvertError::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A usable ffmpeg, its concurrency cap and its time limit.
#[derive(Debug)]
pub struct Ffmpeg {
    program: PathBuf,
    version: String,
    permits: Permits,
    timeout: Duration,
    queue_wait: Duration,
}

impl Ffmpeg {
    /// `setting` is the `audio.ffmpeg` setting: a program name looked up on `PATH`, or a path;
    /// `""` means conversion is off (`Ok(None)`). Runs `-version` to check it. `max_at_once`
    /// below 1 counts as 1; `timeout` bounds each conversion (and the `-version` check, at
    /// most 10 s).
    pub fn find(
        setting: &str,
        max_at_once: usize,
        timeout: Duration,
    ) -> Result<Option<Ffmpeg>, FfmpegError> {
        let setting = setting.trim();
        if setting.is_empty() {
            return Ok(None);
        }
        let program = locate(setting)?;
        let version = probe_version(&program, timeout.min(VERSION_TIMEOUT))?;
        Ok(Some(Ffmpeg {
            program,
            version,
            permits: Permits::new(max_at_once.max(1)),
            timeout,
            queue_wait: DEFAULT_QUEUE_WAIT,
        }))
    }

    /// How long a conversion waits for a permit before [`ConvertError::Busy`].
    pub fn with_queue_wait(mut self, wait: Duration) -> Ffmpeg {
        self.queue_wait = wait;
        self
    }

    /// The first line of `ffmpeg -version`, for the log.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The program found.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// Decodes `input` (any container ffmpeg reads) to 16 kHz mono, refusing more than
    /// `max_seconds` of audio. An MP4 whose index is at its end is reordered first (see the
    /// module comment).
    pub fn decode(&self, input: &[u8], max_seconds: f64) -> Result<Pcm, ConvertError> {
        let reordered = faststart(input);
        self.decode_reader(reordered.as_deref().unwrap_or(input), max_seconds)
    }

    /// [`Ffmpeg::decode`] of a stream, fed to ffmpeg as it is read (no MP4 reordering: an MP4
    /// with its index at the end fails). The call returns once ffmpeg has been reaped and the
    /// feeding thread has stopped, which it does at the end of `input` or on its first write
    /// after ffmpeg is gone; an `input` that blocks keeps the call waiting until it returns.
    pub fn decode_reader<R: Read + Send>(
        &self,
        input: R,
        max_seconds: f64,
    ) -> Result<Pcm, ConvertError> {
        let _permit = self
            .permits
            .acquire(self.queue_wait)
            .ok_or(ConvertError::Busy)?;
        // A float-to-int `as` saturates: an infinite or huge limit is no limit, NaN none at all.
        let max_samples = (max_seconds * f64::from(Pcm::RATE)).floor() as usize;
        let mut child = Command::new(&self.program)
            .args(ARGS)
            .env_remove("FFREPORT")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(ConvertError::Io)?;
        #[cfg(test)]
        tests::note_spawn(child.id());
        let deadline = Instant::now() + self.timeout;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_and_reap(&mut child);
            return Err(ConvertError::Io(io::Error::other(
                "ffmpeg's pipes are missing",
            )));
        };

        thread::scope(|scope| {
            let feeder = scope.spawn(move || feed(input, stdin));
            let messages = scope.spawn(move || keep_stderr(stderr));
            let (sender, samples) = mpsc::channel();
            scope.spawn(move || {
                let _ = sender.send(read_samples(stdout, max_samples));
            });

            let outcome =
                match samples.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(Ok(samples)) => match wait_until(&mut child, deadline) {
                        Ok(Some(status)) => Outcome::Exited(status, samples),
                        Ok(None) => Outcome::Timeout,
                        Err(e) => Outcome::Failed(e),
                    },
                    Ok(Err(Stopped::TooLong(samples))) => Outcome::TooLong(samples),
                    Ok(Err(Stopped::Io(e))) => Outcome::Failed(e),
                    Err(mpsc::RecvTimeoutError::Timeout) => Outcome::Timeout,
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        Outcome::Failed(io::Error::other("the thread reading ffmpeg's output died"))
                    }
                };
            if !matches!(outcome, Outcome::Exited(..)) {
                kill_and_reap(&mut child);
            }
            // Both end now: ffmpeg's pipes are closed, so the next write or read fails.
            let fed = feeder
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("the thread feeding ffmpeg died")));
            let messages = messages.join().unwrap_or_default();

            match outcome {
                Outcome::Timeout => Err(ConvertError::Timeout(self.timeout)),
                Outcome::TooLong(samples) => Err(ConvertError::TooLong {
                    seconds: samples as f64 / f64::from(Pcm::RATE),
                    limit: max_seconds,
                }),
                Outcome::Failed(e) => Err(ConvertError::Io(e)),
                Outcome::Exited(status, samples) => {
                    // ffmpeg may stop reading before the end (it found what it needed, or gave
                    // up): a broken pipe is its decision, reported by its exit status.
                    if let Err(e) = fed {
                        if e.kind() != io::ErrorKind::BrokenPipe {
                            return Err(ConvertError::Io(e));
                        }
                    }
                    // Success with no audio but a complaint (an MP4 it could not index from
                    // a pipe exits 0) is a failure; with some audio, what was decoded stands.
                    if status.success() && (!samples.is_empty() || messages.is_empty()) {
                        Ok(Pcm { samples })
                    } else if status.code().is_none() {
                        Err(ConvertError::Io(io::Error::other(format!(
                            "ffmpeg ended by a signal ({status})"
                        ))))
                    } else {
                        Err(ConvertError::Undecodable(
                            reason(&messages).unwrap_or_else(|| format!("ffmpeg {status}")),
                        ))
                    }
                }
            }
        })
    }
}

/// How the waiting for ffmpeg ended.
enum Outcome {
    Exited(ExitStatus, Vec<i16>),
    TooLong(usize),
    Timeout,
    Failed(io::Error),
}

/// How reading ffmpeg's output ended early.
enum Stopped {
    /// More than the limit: this many samples had been read.
    TooLong(usize),
    Io(io::Error),
}

/// Copies the input into ffmpeg's stdin and closes it (ffmpeg's end of input).
fn feed(mut input: impl io::Read, mut stdin: impl Write) -> io::Result<()> {
    io::copy(&mut input, &mut stdin)?;
    stdin.flush()
}

/// Reads little-endian 16-bit samples until the end, or until there are more than `max`.
fn read_samples(mut stdout: ChildStdout, max: usize) -> Result<Vec<i16>, Stopped> {
    let mut samples = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut carry = None;
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) => return Ok(samples),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Stopped::Io(e)),
        };
        let mut bytes = &buf[..n];
        if let Some(low) = carry.take() {
            samples.push(i16::from_le_bytes([low, bytes[0]]));
            bytes = &bytes[1..];
        }
        let pairs = bytes.chunks_exact(2);
        carry = pairs.remainder().first().copied();
        samples.extend(pairs.map(|b| i16::from_le_bytes([b[0], b[1]])));
        if samples.len() > max {
            return Err(Stopped::TooLong(samples.len()));
        }
    }
}

/// What ffmpeg printed on stderr: its first and last [`STDERR_KEEP`] bytes.
#[derive(Debug, Default)]
struct Messages {
    head: Vec<u8>,
    tail: Vec<u8>,
    /// Bytes between `head` and `tail` were dropped.
    cut: bool,
}

impl Messages {
    fn is_empty(&self) -> bool {
        self.head.iter().all(u8::is_ascii_whitespace)
    }
}

/// Reads stderr to its end (so ffmpeg never blocks on it), keeping its start and its end.
fn keep_stderr(mut stderr: ChildStderr) -> Messages {
    let mut kept = Messages::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stderr.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        let room = STDERR_KEEP.saturating_sub(kept.head.len()).min(n);
        kept.head.extend_from_slice(&buf[..room]);
        kept.tail.extend_from_slice(&buf[room..n]);
        if kept.tail.len() > 2 * STDERR_KEEP {
            kept.tail.drain(..kept.tail.len() - STDERR_KEEP);
            kept.cut = true;
        }
    }
    kept
}

/// ffmpeg's reason in one line: its first and last messages (usually where it went wrong and
/// what it concluded), without pointer addresses or the `pipe:0:` prefix.
fn reason(messages: &Messages) -> Option<String> {
    let mut text = String::from_utf8_lossy(&messages.head).into_owned();
    let tail = String::from_utf8_lossy(&messages.tail);
    if messages.cut {
        // The tail starts mid-line: keep its whole lines only.
        text.push('\n');
        text.push_str(tail.split_once('\n').map_or("", |(_, rest)| rest));
    } else {
        text.push_str(&tail);
    }
    let lines: Vec<String> = text
        .lines()
        .map(clean_line)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("Last message repeated") && l != "Conversion failed!"
        })
        .collect();
    let first = lines.first()?;
    let last = lines.last()?;
    let line = if first == last {
        first.clone()
    } else {
        format!("{first}; {last}")
    };
    Some(match line.char_indices().nth(REASON_CHARS) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line,
    })
}

/// `[mov,mp4 @ 0x55d0c8a0] stream 0: partial file` -> `[mov,mp4] stream 0: partial file`;
/// `pipe:0: Invalid data found` -> `Invalid data found`.
fn clean_line(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line.trim();
    while let Some(at) = rest.find(" @ 0x") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 5..];
        rest = after.trim_start_matches(|c: char| c.is_ascii_hexdigit());
    }
    out.push_str(rest);
    // Rather than the whole list: "[hls] Format not on whitelist 'aac,ac3,...'".
    if let Some(at) = out.find("Format not on whitelist '") {
        out.truncate(at);
        out.push_str("not an audio or video container ffmpeg may read here");
    }
    match out.strip_prefix("pipe:0: ") {
        Some(stripped) => stripped.to_string(),
        None => out,
    }
}

/// Polls the child until it exits or the deadline passes (`None`).
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// SIGKILL to the child's process group (it and anything it started), then reaps it.
fn kill_and_reap(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // The group is still ours: the child, its leader, is not reaped until below.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The program the setting names: a path (anything with a `/`) or a name on `PATH`.
fn locate(setting: &str) -> Result<PathBuf, FfmpegError> {
    if setting.contains('/') {
        let path = PathBuf::from(setting);
        return match std::fs::metadata(&path) {
            Err(source) => Err(FfmpegError::Unreadable { path, source }),
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path),
            Ok(_) => Err(FfmpegError::NotExecutable(path)),
        };
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(setting))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| FfmpegError::NotOnPath(setting.to_string()))
}

/// Runs `program -version` within `limit`; its first line if it says `ffmpeg version`.
fn probe_version(program: &Path, limit: Duration) -> Result<String, FfmpegError> {
    let failed = |reason: String| FfmpegError::Version {
        program: program.to_path_buf(),
        reason,
    };
    let mut child = Command::new(program)
        .arg("-version")
        .env_remove("FFREPORT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| FfmpegError::Start {
            program: program.to_path_buf(),
            source,
        })?;
    #[cfg(test)]
    tests::note_spawn(child.id());
    let deadline = Instant::now() + limit;
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (status, out, err) = thread::scope(|scope| {
        let out = scope.spawn(move || read_bounded(stdout, 64 * 1024));
        let err = scope.spawn(move || read_bounded(stderr, 64 * 1024));
        let status = wait_until(&mut child, deadline);
        if !matches!(status, Ok(Some(_))) {
            kill_and_reap(&mut child);
        }
        (
            status,
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    });
    let status = match status {
        Ok(Some(status)) => status,
        Ok(None) => {
            return Err(failed(format!(
                "`-version` did not finish within {} s",
                limit.as_secs_f64()
            )))
        }
        Err(e) => return Err(failed(format!("waiting for `-version`: {e}"))),
    };
    let first = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .to_string()
    };
    if !status.success() {
        let said = first(&err);
        return Err(failed(if said.is_empty() {
            format!("`-version` {status}")
        } else {
            format!("`-version` {status}: {said}")
        }));
    }
    let line = first(&out);
    if !line.starts_with("ffmpeg version") {
        return Err(failed(format!(
            "`-version` printed {line:?}, not \"ffmpeg version ...\""
        )));
    }
    Ok(line)
}

/// Reads to the end, keeping at most `limit` bytes.
fn read_bounded(pipe: Option<impl io::Read>, limit: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    if let Some(mut pipe) = pipe {
        let mut buf = [0u8; 4096];
        loop {
            match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = limit.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }
    kept
}

/// A counting semaphore: at most `max` conversions at once.
#[derive(Debug)]
struct Permits {
    max: usize,
    taken: Mutex<usize>,
    freed: Condvar,
}

/// One taken permit; dropping it gives it back.
struct Permit<'a>(&'a Permits);

impl Permits {
    fn new(max: usize) -> Permits {
        Permits {
            max,
            taken: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// A permit, waiting up to `wait` for one to be given back; `None` if none was.
    fn acquire(&self, wait: Duration) -> Option<Permit<'_>> {
        let deadline = Instant::now() + wait;
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        while *taken >= self.max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            taken = self
                .freed
                .wait_timeout(taken, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *taken += 1;
        Some(Permit(self))
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut taken = self.0.taken.lock().unwrap_or_else(PoisonError::into_inner);
        *taken -= 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audio::sniff_kind;
    use crate::audio::wav::tests::{frequency, rms, tone, wav_file, Store};
    use std::cell::RefCell;
    use std::net::TcpListener;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    thread_local! {
        /// Processes this thread started, for the tests' checks that none is left.
        static SPAWNED: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn note_spawn(pid: u32) {
        SPAWNED.with(|s| s.borrow_mut().push(pid));
    }

    /// The processes this thread started since the last call.
    pub fn spawned_here() -> Vec<u32> {
        SPAWNED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    /// `(state, parent, process group)` of a process, from `/proc/<pid>/stat`.
    fn proc_stat(pid: u32) -> Option<(char, u32, u32)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid pgrp ...": comm may hold anything, so split after its ')'.
        let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = fields.next()?.chars().next()?;
        let parent = fields.next()?.parse().ok()?;
        let group = fields.next()?.parse().ok()?;
        Some((state, parent, group))
    }

    /// Panics if a process started by this thread is still our child (running or a zombie),
    /// or if anything is left in its process group (a grandchild a script started). A killed
    /// grandchild passes to init, which reaps it: it gets two seconds to.
    fn assert_no_process_left(pids: &[u32]) {
        let me = std::process::id();
        for &pid in pids {
            if let Some((state, parent, _)) = proc_stat(pid) {
                assert_ne!(
                    parent, me,
                    "process {pid} is still our child (state {state})"
                );
            }
        }
        let started = Instant::now();
        loop {
            let left: Vec<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|other| {
                    let (state, parent, group) = proc_stat(other)?;
                    pids.contains(&group)
                        .then(|| format!("{other} (state {state}, parent {parent}, group {group})"))
                })
                .collect();
            if left.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(2),
                "still there after 2 s: {left:?}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// This thread's processes must all be gone; returns how many there were.
    fn check_processes() -> usize {
        let pids = spawned_here();
        assert_no_process_left(&pids);
        pids.len()
    }

    const NEEDS: &str = "needs ffmpeg (apt-get install ffmpeg)";

    /// The real ffmpeg, or a panic naming what is missing.
    fn real_ffmpeg(max_at_once: usize, timeout: Duration) -> Ffmpeg {
        match Ffmpeg::find("ffmpeg", max_at_once, timeout) {
            Ok(Some(ffmpeg)) => ffmpeg,
            Ok(None) => unreachable!("the setting is not empty"),
            Err(e) => panic!("this test {NEEDS}: {e}"),
        }
    }

    /// A directory removed when dropped.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("ism-audio-{}-{tag}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }

        /// Writes an executable script.
        fn script(&self, name: &str, body: &str) -> PathBuf {
            let path = self.path(name);
            std::fs::write(&path, body).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Runs the real ffmpeg to make a test input: `args` then the output file `dir/name`.
    fn make(dir: &TempDir, name: &str, args: &[&str]) -> Vec<u8> {
        let out = dir.path(name);
        let run = Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-y"])
            .args(args)
            .arg(&out)
            .output()
            .unwrap_or_else(|e| panic!("this test {NEEDS}: {e}"));
        assert!(
            run.status.success(),
            "ffmpeg could not make {name}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        std::fs::read(&out).unwrap()
    }

    /// lavfi's 440 Hz sine at `rate` for `seconds`, amplitude 1/8.
    fn sine(seconds: f64, rate: u32) -> String {
        format!("sine=frequency=440:sample_rate={rate}:duration={seconds}")
    }

    /// The decoded audio is `seconds` long (within 50 ms) and holds the 440 Hz tone.
    fn assert_tone(what: &str, pcm: &Pcm, seconds: f64) {
        assert!(
            (pcm.seconds() - seconds).abs() <= 0.05,
            "{what}: {} s decoded, {seconds} s expected",
            pcm.seconds()
        );
        let middle = &pcm.samples[pcm.samples.len() / 10..pcm.samples.len() * 9 / 10];
        let hz = frequency(middle);
        assert!((hz / 440.0 - 1.0).abs() < 0.01, "{what}: {hz} Hz");
        let level = rms(middle);
        // lavfi's sine has an RMS of 0.088; a stereo file made from it carries it at -3 dB
        // in each channel, which the mono mix-down keeps (0.0625), and a lossy codec may
        // shave a little more. The point is that the tone is there, not silence.
        assert!(level > 0.045 && level < 0.1, "{what}: rms {level}");
    }

    #[test]
    fn find_is_off_for_an_empty_setting_and_says_why_a_program_is_unusable() {
        assert!(Ffmpeg::find("", 2, Duration::from_secs(1))
            .unwrap()
            .is_none());
        assert!(Ffmpeg::find("  ", 2, Duration::from_secs(1))
            .unwrap()
            .is_none());
        let err = Ffmpeg::find("no-such-ffmpeg-here", 2, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, FfmpegError::NotOnPath(_)), "{err}");
        assert_eq!(err.to_string(), "`no-such-ffmpeg-here` is not on PATH");
        let err = Ffmpeg::find("/no/such/dir/ffmpeg", 2, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, FfmpegError::Unreadable { .. }), "{err}");

        let dir = TempDir::new("find");
        let plain = dir.path("plain");
        std::fs::write(&plain, "not a program").unwrap();
        let err = Ffmpeg::find(plain.to_str().unwrap(), 2, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, FfmpegError::NotExecutable(_)), "{err}");
        let err = Ffmpeg::find(dir.0.to_str().unwrap(), 2, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, FfmpegError::NotExecutable(_)), "{err}");

        let junk = dir.path("junk");
        std::fs::write(&junk, [0x7F, 0x45, 0x4C, 0x46, 0, 0, 0, 0]).unwrap();
        std::fs::set_permissions(&junk, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = Ffmpeg::find(junk.to_str().unwrap(), 2, Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, FfmpegError::Start { .. }), "{err}");

        let failing = dir.script("failing", "#!/bin/sh\necho 'boom: no codecs' >&2\nexit 3\n");
        let err = Ffmpeg::find(failing.to_str().unwrap(), 2, Duration::from_secs(5)).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("exit status: 3") && message.contains("boom"),
            "{message}"
        );

        let ffprobe = dir.script("ffprobe", "#!/bin/sh\necho 'ffprobe version 5.1'\n");
        let err = Ffmpeg::find(ffprobe.to_str().unwrap(), 2, Duration::from_secs(5)).unwrap_err();
        assert!(err.to_string().contains("\"ffprobe version 5.1\""), "{err}");

        // A `-version` that hangs (in a grandchild) is killed with its whole group.
        let hanging = dir.script("hanging", "#!/bin/sh\nsleep 30\necho 'ffmpeg version 9'\n");
        let started = Instant::now();
        let err = Ffmpeg::find(hanging.to_str().unwrap(), 2, Duration::from_millis(300));
        let message = err.unwrap_err().to_string();
        assert!(message.contains("did not finish within 0.3 s"), "{message}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let fake = dir.script(
            "fake",
            "#!/bin/sh\necho 'ffmpeg version fake-1'\necho more\n",
        );
        let found = Ffmpeg::find(fake.to_str().unwrap(), 0, Duration::from_secs(5))
            .unwrap()
            .unwrap();
        assert_eq!(found.version(), "ffmpeg version fake-1");
        assert_eq!(found.permits.max, 1, "a cap of 0 counts as 1");
        assert_eq!(check_processes(), 4);
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn finds_the_real_ffmpeg_on_path() {
        let ffmpeg = real_ffmpeg(2, Duration::from_secs(30));
        assert!(
            ffmpeg.version().starts_with("ffmpeg version "),
            "{}",
            ffmpeg.version()
        );
        assert!(ffmpeg.program().is_absolute());
        println!("{} at {}", ffmpeg.version(), ffmpeg.program().display());
        check_processes();
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn each_format_decodes_to_its_duration_at_16_khz() {
        let ffmpeg = real_ffmpeg(2, Duration::from_secs(60));
        let dir = TempDir::new("formats");
        let tone44 = sine(10.0, 44_100);
        let tone48 = sine(10.0, 48_000);
        let video = "testsrc=size=160x120:rate=10:duration=10";
        #[rustfmt::skip]
        let formats: Vec<(&str, &str, Vec<&str>)> = vec![
            ("a.m4a", "m4a", vec!["-f", "lavfi", "-i", &tone44, "-ac", "2", "-c:a", "aac"]),
            ("fast.m4a", "m4a", vec!["-f", "lavfi", "-i", &tone44, "-c:a", "aac", "-movflags", "+faststart"]),
            ("a.webm", "webm", vec!["-f", "lavfi", "-i", &tone48, "-ac", "2", "-c:a", "libopus"]),
            ("a.opus", "opus-in-ogg", vec!["-f", "lavfi", "-i", &tone48, "-c:a", "libopus"]),
            ("vorbis.ogg", "ogg", vec!["-f", "lavfi", "-i", &tone44, "-c:a", "libvorbis"]),
            ("a.mp3", "mp3", vec!["-f", "lavfi", "-i", &tone44, "-ac", "2", "-c:a", "libmp3lame"]),
            ("a.flac", "flac", vec!["-f", "lavfi", "-i", &tone48, "-c:a", "flac"]),
            ("stereo.wav", "wav", vec!["-f", "lavfi", "-i", &tone44, "-ac", "2", "-c:a", "pcm_s16le"]),
            ("a.wma", "wma/asf", vec!["-f", "lavfi", "-i", &tone44, "-ac", "2", "-c:a", "wmav2"]),
            ("a.aac", "aac", vec!["-f", "lavfi", "-i", &tone44, "-c:a", "aac", "-f", "adts"]),
            ("video.mp4", "mp4", vec!["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", &tone44,
                "-c:v", "mpeg4", "-c:a", "aac", "-shortest"]),
            ("video.webm", "webm", vec!["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", &tone48,
                "-c:v", "libvpx", "-c:a", "libopus", "-shortest"]),
        ];
        for (name, kind, args) in formats {
            let input = make(&dir, name, &args);
            assert_eq!(sniff_kind(&input), kind, "{name}");
            let started = Instant::now();
            let pcm = ffmpeg
                .decode(&input, 60.0)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            println!(
                "{name:>11} ({kind}, {} bytes): {:.3} s in {} ms",
                input.len(),
                pcm.seconds(),
                started.elapsed().as_millis()
            );
            assert_tone(name, &pcm, 10.0);
        }
        assert!(check_processes() >= 12);
    }

    /// An AMR-NB file of `frames` 12.2 kbit/s frames (20 ms each) of arbitrary bits: AMR has no
    /// checksum in its file format, so any payload decodes (to noise).
    fn amr_nb(frames: usize) -> Vec<u8> {
        let mut file = b"#!AMR\n".to_vec();
        let mut x = 0x2545_F491u32;
        for _ in 0..frames {
            let mut frame = [0u8; 32];
            frame[0] = 0x3C; // frame type 7 (MR122), quality bit set
            for byte in &mut frame[1..] {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *byte = x as u8;
            }
            file.extend_from_slice(&frame);
        }
        file
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn amr_nb_decodes_to_its_duration() {
        // Debian's ffmpeg decodes AMR but has no AMR encoder, so the file is made here.
        let ffmpeg = real_ffmpeg(2, Duration::from_secs(60));
        let input = amr_nb(500);
        assert_eq!(sniff_kind(&input), "amr");
        let pcm = ffmpeg.decode(&input, 60.0).unwrap();
        assert!((pcm.seconds() - 10.0).abs() <= 0.05, "{} s", pcm.seconds());
        assert!(rms(&pcm.samples) > 0.0, "noise, not silence");
        check_processes();
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn an_mp4_with_its_index_at_the_end_is_reordered_to_decode_from_a_pipe() {
        let ffmpeg = real_ffmpeg(2, Duration::from_secs(60));
        let dir = TempDir::new("moov");
        let input = make(
            &dir,
            "late.m4a",
            &["-f", "lavfi", "-i", &sine(10.0, 44_100), "-c:a", "aac"],
        );
        let boxes = |bytes: &[u8]| {
            let mut kinds = Vec::new();
            let mut at = 0;
            while let Some(b) = crate::audio::mp4::mp4_box(bytes, at) {
                kinds.push(String::from_utf8_lossy(&b.kind).into_owned());
                at = b.end;
            }
            kinds
        };
        assert_eq!(boxes(&input), ["ftyp", "free", "mdat", "moov"]);
        // As it is, a pipe cannot go back from the index to the samples.
        match ffmpeg.decode_reader(&input[..], 60.0) {
            Err(ConvertError::Undecodable(reason)) => println!("unordered: {reason}"),
            other => panic!("expected ffmpeg to fail on the unordered file: {other:?}"),
        }
        let reordered = faststart(&input).unwrap();
        assert_eq!(boxes(&reordered), ["ftyp", "free", "moov", "mdat"]);
        assert_eq!(reordered.len(), input.len());
        assert_tone("reordered", &ffmpeg.decode(&input, 60.0).unwrap(), 10.0);
        check_processes();
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn truncated_files_decode_what_is_there_or_say_the_index_is_missing() {
        let ffmpeg = real_ffmpeg(2, Duration::from_secs(60));
        let dir = TempDir::new("truncated");
        let tone = sine(10.0, 44_100);
        let fast = make(
            &dir,
            "fast.m4a",
            &[
                "-f",
                "lavfi",
                "-i",
                &tone,
                "-c:a",
                "aac",
                "-movflags",
                "+faststart",
            ],
        );
        let mp3 = make(
            &dir,
            "a.mp3",
            &["-f", "lavfi", "-i", &tone, "-c:a", "libmp3lame"],
        );
        let late = make(
            &dir,
            "late.m4a",
            &["-f", "lavfi", "-i", &tone, "-c:a", "aac"],
        );
        for (name, input) in [("faststart m4a", &fast), ("mp3", &mp3)] {
            let cut = &input[..input.len() * 6 / 10];
            let pcm = ffmpeg
                .decode(cut, 60.0)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            println!("{name} cut at 60 %: {:.2} s of 10 decoded", pcm.seconds());
            assert!(
                pcm.seconds() > 5.0 && pcm.seconds() < 7.0,
                "{name}: {} s",
                pcm.seconds()
            );
        }
        // An index-at-the-end file cut short has lost its index: nothing to decode.
        match ffmpeg.decode(&late[..late.len() * 6 / 10], 60.0) {
            Err(ConvertError::Undecodable(reason)) => {
                println!("m4a with its index cut off: {reason}");
                assert!(reason.contains("moov atom not found"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        check_processes();
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn junk_is_undecodable_with_ffmpegs_one_line_reason() {
        let ffmpeg = real_ffmpeg(2, Duration::from_secs(60));
        let text = b"This is a text file that somebody named recording.m4a.\n";
        assert_eq!(sniff_kind(text), "text");
        for input in [&text[..], b"", &[0u8; 10_000]] {
            match ffmpeg.decode(input, 60.0) {
                Err(ConvertError::Undecodable(reason)) => {
                    assert_eq!(reason, "Invalid data found when processing input");
                    let message = ConvertError::Undecodable(reason).to_string();
                    assert_eq!(
                        message,
                        "ffmpeg cannot decode the audio: Invalid data found when processing input"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        check_processes();
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn playlists_cannot_make_ffmpeg_open_a_file_or_a_url() {
        let dir = TempDir::new("playlists");
        // Files that exist and that ffmpeg would happily decode, were it allowed to open them.
        let secret = dir.path("secret.wav");
        std::fs::write(
            &secret,
            wav_file(
                16_000,
                1,
                16_000,
                Store::I16,
                false,
                tone(440.0, 16_000, 0.5),
            ),
        )
        .unwrap();
        let secret = secret.to_str().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!(
            "http://127.0.0.1:{}/segment.ts",
            listener.local_addr().unwrap().port()
        );
        let hls = |target: &str| {
            format!(
                "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n\
                 #EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n"
            )
        };
        let concat = |target: &str| format!("ffconcat version 1.0\nfile '{target}'\nduration 1\n");
        let dash = |target: &str| {
            format!(
                "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
                 type=\"static\" mediaPresentationDuration=\"PT1S\" minBufferTime=\"PT1S\" \
                 profiles=\"urn:mpeg:dash:profile:isoff-on-demand:2011\"><Period>\
                 <AdaptationSet mimeType=\"audio/wav\"><Representation id=\"a\" \
                 bandwidth=\"256000\"><BaseURL>{target}</BaseURL></Representation>\
                 </AdaptationSet></Period></MPD>\n"
            )
        };
        let inputs = [
            hls(&format!("file://{secret}")),
            hls(secret),
            hls("file:///etc/passwd"),
            hls(&url),
            concat(secret),
            concat(&format!("file:{secret}")),
            concat("secret.wav"),
            concat(&url),
            concat("/etc/passwd"),
            // `pipe:3`: the descriptor 3 ffmpeg would read, had it inherited one.
            concat("3"),
            dash(&format!("file://{secret}")),
            dash(&url),
        ];

        let real = real_ffmpeg(2, Duration::from_secs(30));
        // Run through strace too when it is there, to see every file and socket call.
        let strace = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join("strace").is_file()));
        let log = dir.path("strace.log");
        let traced = strace.then(|| {
            let wrapper = dir.script(
                "traced-ffmpeg",
                &format!(
                    "#!/bin/sh\nexec strace -f -qq -e trace=%file,%network -o '{}' '{}' \"$@\"\n",
                    log.display(),
                    real.program().display()
                ),
            );
            Ffmpeg::find(wrapper.to_str().unwrap(), 2, Duration::from_secs(30))
                .unwrap()
                .unwrap()
        });
        if !strace {
            println!("strace is not installed: proving the refusals by ffmpeg's errors alone");
        }
        for input in &inputs {
            let first_line: String = input.lines().next().unwrap().chars().take(21).collect();
            // What it names (`3` in the one that names a descriptor).
            let target = input
                .split(['\n', '<', '>', '\''])
                .find(|l| l.contains("secret") || l.contains("passwd") || l.starts_with("http"))
                .unwrap_or("3");
            match real.decode(input.as_bytes(), 60.0) {
                Err(ConvertError::Undecodable(reason)) => {
                    println!("{first_line} -> {target}: {reason}");
                    assert!(
                        reason.ends_with(
                            "not an audio or video container ffmpeg may read here; \
                             Invalid argument"
                        ),
                        "{reason}"
                    );
                }
                other => panic!("{first_line} -> {target}: {other:?}"),
            }
            if let Some(traced) = &traced {
                let result = traced.decode(input.as_bytes(), 60.0);
                assert!(
                    matches!(result, Err(ConvertError::Undecodable(_))),
                    "{result:?}"
                );
                let calls = std::fs::read_to_string(&log).unwrap();
                assert!(
                    calls.contains("openat("),
                    "strace saw no file calls: {calls}"
                );
                for line in calls.lines() {
                    assert!(
                        !line.contains("secret")
                            && !line.contains("/etc/passwd")
                            && !line.contains("connect("),
                        "ffmpeg tried {line:?} for {target}"
                    );
                }
            }
        }
        // The second line of defence alone: without the format whitelist, the protocol
        // whitelist still stops the playlists from reaching the file and the URL.
        let without_formats: Vec<&str> = ARGS
            .iter()
            .copied()
            .filter(|a| *a != "-format_whitelist" && *a != FORMATS)
            .collect();
        assert_eq!(without_formats.len(), ARGS.len() - 2);
        for (input, refusal) in [
            (
                hls(&format!("file://{secret}")),
                "Protocol 'file' not on whitelist 'pipe'",
            ),
            (hls(&url), "Protocol 'http' not on whitelist 'pipe'"),
            (dash(&url), "Protocol 'http' not on whitelist 'pipe'"),
        ] {
            let mut child = Command::new(real.program())
                .args(&without_formats)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            let run = child.wait_with_output().unwrap();
            let said = String::from_utf8_lossy(&run.stderr);
            assert!(run.stdout.is_empty() && said.contains(refusal), "{said}");
        }
        match listener.accept() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => panic!("something connected to the playlist's URL: {other:?}"),
        }
        check_processes();
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn output_past_max_seconds_stops_the_conversion() {
        let ffmpeg = real_ffmpeg(2, Duration::from_secs(120));
        let dir = TempDir::new("long");
        // An hour of silence packs into a few hundred kilobytes of FLAC: 115 MB decoded.
        let input = make(
            &dir,
            "hour.flac",
            &[
                "-f",
                "lavfi",
                "-i",
                "anullsrc=r=8000:cl=mono",
                "-t",
                "3600",
                "-c:a",
                "flac",
            ],
        );
        let started = Instant::now();
        match ffmpeg.decode(&input, 30.0) {
            Err(ConvertError::TooLong { seconds, limit }) => {
                assert_eq!(limit, 30.0);
                assert!(seconds > 30.0 && seconds < 32.0, "{seconds}");
            }
            other => panic!("{other:?}"),
        }
        println!("stopped after {} ms", started.elapsed().as_millis());
        assert!(started.elapsed() < Duration::from_secs(20));
        let message = ConvertError::TooLong {
            seconds: 30.5,
            limit: 30.0,
        }
        .to_string();
        assert_eq!(message, "the audio is longer than the limit of 30 s");
        check_processes();
    }

    /// Gives `head`, then one byte every 100 ms, forever: an upload that stalls.
    struct Dribble<'a> {
        head: &'a [u8],
    }

    impl io::Read for Dribble<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.head.is_empty() {
                return self.head.read(buf);
            }
            thread::sleep(Duration::from_millis(100));
            buf[0] = 0;
            Ok(1)
        }
    }

    #[test]
    fn the_timeout_kills_a_stalled_program_and_everything_it_started() {
        let dir = TempDir::new("stall");
        let stalls = dir.script(
            "stalls",
            "#!/bin/sh\n[ \"$1\" = -version ] && { echo 'ffmpeg version stall'; exit 0; }\nsleep 30\n",
        );
        let ffmpeg = Ffmpeg::find(stalls.to_str().unwrap(), 2, Duration::from_millis(500))
            .unwrap()
            .unwrap();
        // More than a pipe holds: the feeder is blocked writing when the kill comes.
        let input = vec![0u8; 1 << 20];
        let started = Instant::now();
        match ffmpeg.decode(&input, 60.0) {
            Err(ConvertError::Timeout(after)) => assert_eq!(after, Duration::from_millis(500)),
            other => panic!("{other:?}"),
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(500) && took < Duration::from_secs(3),
            "{took:?}"
        );
        assert_eq!(check_processes(), 2, "-version and the conversion");
        assert_eq!(
            *ffmpeg.permits.taken.lock().unwrap(),
            0,
            "the permit is back"
        );
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn the_timeout_kills_ffmpeg_waiting_on_a_stalled_upload() {
        let ffmpeg = real_ffmpeg(2, Duration::from_secs(1));
        let dir = TempDir::new("dribble");
        let mp3 = make(
            &dir,
            "a.mp3",
            &[
                "-f",
                "lavfi",
                "-i",
                &sine(10.0, 44_100),
                "-c:a",
                "libmp3lame",
            ],
        );
        let started = Instant::now();
        let result = ffmpeg.decode_reader(
            Dribble {
                head: &mp3[..mp3.len() / 2],
            },
            60.0,
        );
        assert!(
            matches!(result, Err(ConvertError::Timeout(_))),
            "{result:?}"
        );
        let took = started.elapsed();
        assert!(took < Duration::from_secs(3), "{took:?}");
        check_processes();
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn at_most_max_at_once_conversions_run_and_past_the_wait_busy() {
        let dir = TempDir::new("permits");
        let log = dir.path("runs.log");
        let real = real_ffmpeg(1, Duration::from_secs(30));
        // Logs each conversion's start and end around the real ffmpeg, slowed down to overlap.
        let wrapper = dir.script(
            "counting-ffmpeg",
            &format!(
                "#!/bin/sh\n[ \"$1\" = -version ] && exec '{ffmpeg}' -version\n\
                 echo start >> '{log}'\nsleep 0.3\n'{ffmpeg}' \"$@\"\nstatus=$?\n\
                 echo end >> '{log}'\nexit $status\n",
                ffmpeg = real.program().display(),
                log = log.display()
            ),
        );
        let ffmpeg = Arc::new(
            Ffmpeg::find(wrapper.to_str().unwrap(), 2, Duration::from_secs(30))
                .unwrap()
                .unwrap(),
        );
        let input = Arc::new(wav_file(
            44_100,
            2,
            44_100,
            Store::I16,
            false,
            tone(440.0, 44_100, 0.25),
        ));
        let calls: Vec<_> = (0..6)
            .map(|_| {
                let (ffmpeg, input) = (Arc::clone(&ffmpeg), Arc::clone(&input));
                thread::spawn(move || {
                    let pcm = ffmpeg.decode(&input, 60.0).unwrap();
                    assert_eq!(pcm.samples.len(), 16_000);
                    spawned_here()
                })
            })
            .collect();
        let mut pids = Vec::new();
        for call in calls {
            pids.extend(call.join().unwrap());
        }
        assert_eq!(pids.len(), 6);
        assert_no_process_left(&pids);
        let (mut running, mut most) = (0, 0);
        for line in std::fs::read_to_string(&log).unwrap().lines() {
            running += if line == "start" { 1 } else { -1 };
            most = most.max(running);
        }
        assert_eq!(
            (running, most),
            (0, 2),
            "at most 2 at once, and 2 did overlap"
        );

        // One permit, held by a conversion that stalls: the next call waits 200 ms, then Busy.
        let stalls = dir.script(
            "stalls",
            "#!/bin/sh\n[ \"$1\" = -version ] && { echo 'ffmpeg version stall'; exit 0; }\nsleep 30\n",
        );
        let one = Arc::new(
            Ffmpeg::find(stalls.to_str().unwrap(), 1, Duration::from_millis(1500))
                .unwrap()
                .unwrap()
                .with_queue_wait(Duration::from_millis(200)),
        );
        let holder = {
            let one = Arc::clone(&one);
            thread::spawn(move || (one.decode(b"x", 60.0), spawned_here()))
        };
        while *one.permits.taken.lock().unwrap() == 0 {
            thread::sleep(Duration::from_millis(10));
        }
        let started = Instant::now();
        assert!(matches!(one.decode(b"x", 60.0), Err(ConvertError::Busy)));
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(200) && waited < Duration::from_secs(1),
            "{waited:?}"
        );
        let (held, pids) = holder.join().unwrap();
        assert!(matches!(held, Err(ConvertError::Timeout(_))), "{held:?}");
        assert_no_process_left(&pids);
        assert_eq!(*one.permits.taken.lock().unwrap(), 0);
        check_processes();
    }

    #[test]
    fn the_reason_is_the_first_and_last_message_without_addresses() {
        let messages = |text: &str| Messages {
            head: text.as_bytes().to_vec(),
            ..Messages::default()
        };
        assert_eq!(reason(&messages("")), None);
        assert_eq!(
            reason(&messages(
                "pipe:0: Invalid data found when processing input\n"
            ))
            .unwrap(),
            "Invalid data found when processing input"
        );
        assert_eq!(
            reason(&messages(
                "[file @ 0x560eabfb7140] Protocol 'file' not on whitelist 'pipe'!\n\
                 [mp3 @ 0x560eabfadfc0] Failed to read frame size: Could not seek to 1026.\n\
                 pipe:0: Invalid argument\n"
            ))
            .unwrap(),
            "[file] Protocol 'file' not on whitelist 'pipe'!; Invalid argument"
        );
        assert_eq!(
            reason(&messages(&format!(
                "[concat @ 0x555b71983ac0] Format not on whitelist '{FORMATS}'\n\
                 pipe:0: Invalid argument\n"
            )))
            .unwrap(),
            "[concat] not an audio or video container ffmpeg may read here; Invalid argument"
        );
        assert_eq!(
            reason(&messages(
                "[aac @ 0x1] bad\n    Last message repeated 3 times\nConversion failed!\n"
            ))
            .unwrap(),
            "[aac] bad"
        );
        // Megabytes of the same complaint: the first and the last line survive, bounded.
        let mut kept = Messages::default();
        let line = "[mp3float @ 0x55d0c8a0] Header missing\n";
        let mut all = line.repeat(50_000);
        all.push_str("pipe:0: Invalid data found when processing input\n");
        for chunk in all.as_bytes().chunks(4096) {
            let room = STDERR_KEEP.saturating_sub(kept.head.len()).min(chunk.len());
            kept.head.extend_from_slice(&chunk[..room]);
            kept.tail.extend_from_slice(&chunk[room..]);
            if kept.tail.len() > 2 * STDERR_KEEP {
                kept.tail.drain(..kept.tail.len() - STDERR_KEEP);
                kept.cut = true;
            }
        }
        assert!(kept.cut && kept.tail.len() <= 2 * STDERR_KEEP);
        assert_eq!(
            reason(&kept).unwrap(),
            "[mp3float] Header missing; Invalid data found when processing input"
        );
        let long = format!("pipe:0: {}", "é".repeat(1000));
        assert_eq!(
            reason(&messages(&long)).unwrap().chars().count(),
            REASON_CHARS + 3
        );
    }

    /// `cargo test --release --lib ffmpeg::tests::decode_speed -- --ignored --nocapture`
    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg); benchmark: prints the decode speed of a 1-hour m4a"]
    fn decode_speed_of_an_hour_of_m4a() {
        let ffmpeg = real_ffmpeg(1, Duration::from_secs(600));
        let dir = TempDir::new("hour");
        // A minute of 44.1 kHz stereo AAC at 128 kbit/s (noise, so the encoder has work),
        // repeated 60 times without re-encoding, index at the end as ffmpeg writes it.
        make(
            &dir,
            "minute.m4a",
            &[
                "-f",
                "lavfi",
                "-i",
                "anoisesrc=d=60:c=pink:r=44100:a=0.2",
                "-ac",
                "2",
                "-c:a",
                "aac",
                "-b:a",
                "128k",
            ],
        );
        let minute = dir.path("minute.m4a");
        let input = make(
            &dir,
            "hour.m4a",
            &[
                "-stream_loop",
                "59",
                "-i",
                minute.to_str().unwrap(),
                "-c",
                "copy",
            ],
        );
        let started = Instant::now();
        let pcm = ffmpeg.decode(&input, 2.0 * 3600.0).unwrap();
        let took = started.elapsed();
        assert!((pcm.seconds() - 3600.0).abs() < 1.0, "{}", pcm.seconds());
        println!(
            "Ffmpeg::decode: 1 h of 44.1 kHz stereo AAC m4a ({} MB, index at the end) to 16 kHz \
             mono in {:.2} s ({:.0}x real time)",
            input.len() / 1_000_000,
            took.as_secs_f64(),
            3600.0 / took.as_secs_f64()
        );
        check_processes();
    }
}
