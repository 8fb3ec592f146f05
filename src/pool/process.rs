//! Worker processes: the command line, spawning into an own process group with its output
//! pumped into its log (`worker_log`), signals, pid records and the reaping of orphans left by
//! a manager that was killed.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use super::worker_log::{pump, WorkerLog};

/// Ports scanned above `startingPort` for a free one: room for the pool, rotation overlap
/// and ports held by foreign processes.
const PORT_SCAN_RANGE: u16 = 1000;

/// Why a worker program could not be found or started.
#[derive(Debug)]
pub enum SpawnError {
    /// A bare program name that no `PATH` directory holds.
    NotOnPath(String),
    /// The path exists but is not an executable file.
    NotExecutable(PathBuf),
    /// The path could not be read (missing, no permission).
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The worker's log file could not be opened.
    Log {
        dir: PathBuf,
        source: std::io::Error,
    },
    /// The operating system refused to start the program.
    Start {
        program: PathBuf,
        source: std::io::Error,
    },
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SpawnError::NotOnPath(name) => write!(f, "`{name}` is not on PATH"),
            SpawnError::NotExecutable(path) => {
                write!(f, "{} is not an executable file", path.display())
            }
            SpawnError::Unreadable { path, source } => write!(f, "{}: {source}", path.display()),
            SpawnError::Log { dir, source } => {
                write!(
                    f,
                    "cannot open the worker log in {}: {source}",
                    dir.display()
                )
            }
            SpawnError::Start { program, source } => {
                write!(f, "cannot start {}: {source}", program.display())
            }
        }
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SpawnError::NotOnPath(_) | SpawnError::NotExecutable(_) => None,
            SpawnError::Unreadable { source, .. }
            | SpawnError::Log { source, .. }
            | SpawnError::Start { source, .. } => Some(source),
        }
    }
}

/// How to start a worker: `program --host 127.0.0.1 --port P [-m model] [--threads n] args...`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub cwd: Option<PathBuf>,
    pub args: Vec<String>,
    /// `--threads` to add when `args` do not set one.
    pub threads: Option<usize>,
}

impl WorkerCommand {
    /// The arguments after the program for a worker on `port` serving `model_path`.
    pub fn argv(&self, port: u16, model_path: Option<&str>) -> Vec<String> {
        let mut argv = vec![
            "--host".to_string(),
            "127.0.0.1".to_string(),
            "--port".to_string(),
            port.to_string(),
        ];
        if let Some(path) = model_path {
            argv.extend(["-m".to_string(), path.to_string()]);
        }
        if let Some(threads) = self.threads {
            argv.extend(["--threads".to_string(), threads.to_string()]);
        }
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// Whether `args` already choose a thread count.
pub fn args_set_threads(args: &[String]) -> bool {
    args.iter()
        .any(|a| a == "-t" || a == "--threads" || a.starts_with("--threads="))
}

/// Finds `name` on `PATH` when it has no slash; checks that the file exists and is executable.
pub fn resolve_program(name: &str, cwd: Option<&Path>) -> Result<PathBuf, SpawnError> {
    use std::os::unix::fs::PermissionsExt;
    let candidate = if name.contains('/') {
        let path = PathBuf::from(name);
        match (path.is_relative(), cwd) {
            (true, Some(cwd)) => cwd.join(path),
            _ => path,
        }
    } else {
        let path_var = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path_var)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .ok_or_else(|| SpawnError::NotOnPath(name.to_string()))?
    };
    let meta = std::fs::metadata(&candidate).map_err(|source| SpawnError::Unreadable {
        path: candidate.clone(),
        source,
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(SpawnError::NotExecutable(candidate));
    }
    Ok(candidate)
}

/// A running worker process and what is needed to stop it.
#[derive(Debug)]
pub struct WorkerProcess {
    pub child: Child,
    pub port: u16,
    /// Where its pid record lives, removed when the process is gone.
    pub pid_record: PathBuf,
    /// Set when we asked it to stop: SIGKILL follows at this instant if it is still alive.
    pub kill_at: Option<Instant>,
    /// The process has been waited for: its pid may now belong to someone else, so no more
    /// signals go to it.
    reaped: bool,
}

impl WorkerProcess {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM to the worker's process group now, SIGKILL after `grace`. Idempotent.
    pub fn request_stop(&mut self, grace: Duration) {
        if self.kill_at.is_none() {
            signal_group(self.pid(), Signal::SIGTERM);
            self.kill_at = Some(Instant::now() + grace);
        }
    }

    /// `Some` once the process has exited (and is reaped). Escalates to SIGKILL when the
    /// grace period of `request_stop` has passed.
    pub fn poll_exit(&mut self) -> Option<std::process::ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            self.cleanup();
            return Some(status);
        }
        if self.kill_at.is_some_and(|at| Instant::now() >= at) {
            self.kill_now();
        }
        None
    }

    /// SIGKILL to the group; the next `poll_exit` reaps it.
    pub fn kill_now(&mut self) {
        signal_group(self.pid(), Signal::SIGKILL);
        let _ = self.child.kill();
    }

    fn cleanup(&mut self) {
        if self.reaped {
            return;
        }
        self.reaped = true;
        // The group may hold children of the worker; they go with it.
        signal_group(self.pid(), Signal::SIGKILL);
        let _ = std::fs::remove_file(&self.pid_record);
    }
}

impl Drop for WorkerProcess {
    /// Last defence: a worker must never outlive the manager's bookkeeping of it.
    fn drop(&mut self) {
        if !self.reaped && matches!(self.child.try_wait(), Ok(None)) {
            log::warn!(
                "worker pid {} on port {} dropped while alive; killing it",
                self.pid(),
                self.port
            );
            self.kill_now();
            let _ = self.child.wait();
        }
        self.cleanup();
    }
}

fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        // ESRCH (already gone) is the expected outcome often enough not to log.
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Spawns the worker in its own process group with output pumped into its log file, and
/// writes its pid record. `on_exit` hears `MonitorEvent::Wake` when the worker's output
/// closes, which is when it exits (or closes both streams), so the monitor need not poll.
pub fn spawn(
    command: &WorkerCommand,
    port: u16,
    model_path: Option<&str>,
    log_dir: &Path,
    pid_dir: &Path,
    on_exit: &Sender<super::MonitorEvent>,
) -> Result<WorkerProcess, SpawnError> {
    let log = WorkerLog::open(log_dir, port).map_err(|source| SpawnError::Log {
        dir: log_dir.to_path_buf(),
        source,
    })?;
    let mut cmd = Command::new(&command.program);
    cmd.args(command.argv(port, model_path))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    die_with_the_manager(&mut cmd);
    if let Some(cwd) = &command.cwd {
        cmd.current_dir(cwd);
    }
    let mut child = cmd.spawn().map_err(|source| SpawnError::Start {
        program: command.program.clone(),
        source,
    })?;
    let log = Arc::new(Mutex::new(log));
    if let Some(out) = child.stdout.take() {
        pump(out, "stdout", Arc::clone(&log), on_exit.clone());
    }
    if let Some(err) = child.stderr.take() {
        pump(err, "stderr", log, on_exit.clone());
    }
    let pid_record = pid_dir.join(format!("worker-{port}.pid"));
    write_pid_record(&pid_record, child.id(), &command.program)
        .unwrap_or_else(|e| log::warn!("cannot write pid record {}: {e}", pid_record.display()));
    Ok(WorkerProcess {
        child,
        port,
        pid_record,
        kill_at: None,
        reaped: false,
    })
}

/// Has the kernel SIGKILL the worker when the manager dies, even by SIGKILL and even when
/// nobody starts the manager again (`PR_SET_PDEATHSIG`, kept across the worker's `exec`). The
/// signal comes when the thread that spawned the worker ends: the monitor, which lives until
/// every worker is stopped. A worker started through a wrapper that forks (rather than
/// `exec`s) loses the setting in its children; those are reaped by process group on the next
/// start (`reap_orphans`).
#[allow(unsafe_code)]
fn die_with_the_manager(cmd: &mut Command) {
    let manager = nix::unistd::getpid();
    let hook = move || {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
        // The manager died between fork and prctl: the signal will never come.
        if nix::unistd::getppid() != manager {
            return Err(std::io::Error::from(std::io::ErrorKind::Other));
        }
        Ok(())
    };
    // SAFETY: `pre_exec` runs the hook in the child between fork and exec, where only
    // async-signal-safe work is allowed. The hook makes two system calls (prctl(2),
    // getppid(2)) through nix's thin wrappers, and builds its errors without allocating
    // (`io::Error` from an errno or an `ErrorKind`): no allocation, no lock.
    unsafe {
        cmd.pre_exec(hook);
    }
}

fn write_pid_record(path: &Path, pid: u32, program: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let started = process_stat(pid).map(|s| s.start_time);
    let record = serde_json::json!({
        "pid": pid,
        "program": program,
        "startTime": started,
        "pgid": pid,
    });
    std::fs::write(path, record.to_string())
}

/// What `/proc/PID/stat` says of a process that matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    /// Clock ticks after boot when it started: with the pid, unique to one process.
    start_time: u64,
    /// A zombie has exited; only its exit status waits to be collected.
    zombie: bool,
    pgid: u32,
}

fn process_stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Fields after the command (which may hold spaces and parentheses) start at field 3, the
/// state; the process group is field 5, the start time field 22.
fn parse_stat(stat: &str) -> Option<Stat> {
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(Stat {
        start_time: fields.get(19)?.parse().ok()?,
        zombie: fields.first() == Some(&"Z"),
        pgid: fields.get(2)?.parse().ok()?,
    })
}

/// The exclusive claim of one manager on the pid records under a data directory, held for as
/// long as the value lives; the kernel lets go of it when the manager exits, however it exits.
pub struct DataDirLock {
    _held: nix::fcntl::Flock<File>,
}

/// Why the data directory could not be claimed.
#[derive(Debug)]
pub enum LockError {
    /// Another manager runs on this data directory: starting would reap its live workers.
    Held(PathBuf),
    Io(PathBuf, std::io::Error),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held(path) => write!(
                f,
                "another manager already runs on this data directory (it holds {}): stop it, or \
                 give this one its own data directory with XDG_DATA_HOME or XDG_DIR_NAME",
                path.display()
            ),
            LockError::Io(path, e) => write!(f, "cannot lock {}: {e}", path.display()),
        }
    }
}

impl std::error::Error for LockError {}

/// Claims `data_dir` for this manager, before it reads or writes any pid record there. Two
/// managers on one directory would each take the other's workers for orphans of a crash. The
/// file stays after exit: only the lock on it says a manager runs.
pub fn lock_data_dir(data_dir: &Path) -> Result<DataDirLock, LockError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = data_dir.join("manager.lock");
    let io = |e| LockError::Io(path.clone(), e);
    std::fs::create_dir_all(data_dir).map_err(io)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io)?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => Ok(DataDirLock { _held: held }),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(LockError::Held(path)),
        Err((_, errno)) => Err(io(errno.into())),
    }
}

/// Kills the workers recorded under `pid_dir` by a previous manager that did not shut down
/// cleanly: each worker's whole process group, so a worker started through a wrapper (a shell
/// script, an interpreter) goes with everything it started. A record is acted on only when its
/// pid still runs the process recorded (same start time), or when that process is gone but
/// its group lives on (a group id is not reused while the group has members), so a recycled
/// pid is never killed. Waits at most `limit` for them to go; a zombie counts as gone.
/// Returns how many were reaped.
pub fn reap_orphans(pid_dir: &Path, limit: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(pid_dir) else {
        return 0;
    };
    let mut killed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "pid") {
            if let Some(orphan) = orphan(&path) {
                log::warn!(
                    "reaping orphaned worker pid {} (process group {}) from {}",
                    orphan.pid,
                    orphan.pgid,
                    path.display()
                );
                signal_group(orphan.pgid, Signal::SIGKILL);
                killed.push(orphan.pgid);
            }
            let _ = std::fs::remove_file(&path);
        }
    }
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && killed.iter().any(|pgid| group_has_members(*pgid)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    killed.len()
}

/// A recorded worker whose group is to be killed.
struct Orphan {
    pid: u32,
    pgid: u32,
}

fn orphan(record: &Path) -> Option<Orphan> {
    let text = std::fs::read_to_string(record).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let number = |key: &str| value.get(key)?.as_u64();
    let pid = u32::try_from(number("pid")?).ok()?;
    let pgid = u32::try_from(number("pgid")?).ok()?;
    let recorded_start = number("startTime")?;
    let alive_and_ours = match process_stat(pid) {
        Some(stat) => stat.start_time == recorded_start,
        // The leader is gone; members of its group may not be.
        None => group_has_members(pgid),
    };
    alive_and_ours.then_some(Orphan { pid, pgid })
}

/// Whether a process that has not exited (zombies have) is in process group `pgid`.
fn group_has_members(pgid: u32) -> bool {
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|entry| {
        std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
            .is_some_and(|stat| stat.pgid == pgid && !stat.zombie)
    })
}

/// Whether a worker can have `port`, on loopback and on the wildcard address: nothing listens
/// there and no connection holds it. whisper-server sets SO_REUSEPORT, so a second one on a
/// taken port would start silently and share its traffic; and it sets nothing else, so it
/// cannot bind beside a connection in TIME_WAIT that another program's listener left there
/// (the stub's, say: a manager restarted from the stub onto whisper-server had its first worker
/// exit "couldn't bind to server socket" again and again). A bind with no option at all fails
/// in both cases and is the test; std's `TcpListener::bind` sets SO_REUSEADDR, which passes
/// the second.
pub fn port_is_free(port: u16) -> bool {
    binds_alone(Ipv4Addr::LOCALHOST, port) && binds_alone(Ipv4Addr::UNSPECIFIED, port)
}

/// Whether a TCP socket with no options set can bind `ip:port` (it is closed at once).
fn binds_alone(ip: Ipv4Addr, port: u16) -> bool {
    use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    use std::os::fd::AsRawFd;
    let Ok(socket) = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) else {
        return false;
    };
    bind(
        socket.as_raw_fd(),
        &SockaddrIn::from(SocketAddrV4::new(ip, port)),
    )
    .is_ok()
}

/// The first port from `start` that no worker of ours holds and nothing listens on.
pub fn pick_port(start: u16, in_use: &[u16]) -> Option<u16> {
    (start..=start.saturating_add(PORT_SCAN_RANGE))
        .find(|p| !in_use.contains(p) && port_is_free(*p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_puts_host_port_model_threads_before_args() {
        let command = WorkerCommand {
            program: "/bin/ws".into(),
            cwd: None,
            args: vec!["--flash-attn".into()],
            threads: Some(2),
        };
        assert_eq!(
            command.argv(39000, Some("m.bin")),
            [
                "--host",
                "127.0.0.1",
                "--port",
                "39000",
                "-m",
                "m.bin",
                "--threads",
                "2",
                "--flash-attn"
            ]
        );
    }

    #[test]
    fn stat_fields_are_read_after_the_command() {
        let stat =
            "4242 (a (weird) cmd) Z 1 4242 4242 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 987654 0 0";
        assert_eq!(
            parse_stat(stat),
            Some(Stat {
                start_time: 987654,
                zombie: true,
                pgid: 4242,
            })
        );
        let own = process_stat(std::process::id()).unwrap();
        assert!(!own.zombie && own.start_time > 0);
    }

    #[test]
    fn thread_flags_are_recognised() {
        assert!(args_set_threads(&["-t".into(), "4".into()]));
        assert!(args_set_threads(&["--threads=4".into()]));
        assert!(!args_set_threads(&["-tr".into()]));
    }

    #[test]
    fn a_port_a_listener_left_a_closed_connection_on_is_not_free() {
        use std::io::Read;
        use std::net::{TcpListener, TcpStream};
        // A listener as std (and the stub, and tiny_http) makes it, with SO_REUSEADDR; its side
        // of a connection closes first, so that side stays in TIME_WAIT on the port.
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
        drop(listener.accept().unwrap().0);
        let _ = client.read(&mut [0; 1]);
        drop(client);
        drop(listener);
        assert!(
            TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok(),
            "std's bind (SO_REUSEADDR) takes the port"
        );
        assert!(!port_is_free(port), "whisper-server's bind would not");
    }

    #[test]
    fn pick_port_skips_ours_and_taken_ones() {
        use std::net::TcpListener;
        let taken = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = taken.local_addr().unwrap().port();
        let picked = pick_port(port, &[port + 1]).unwrap();
        assert!(picked != port && picked != port + 1);
    }

    #[test]
    fn resolve_program_finds_sh_and_rejects_missing() {
        assert!(resolve_program("sh", None).is_ok());
        assert!(resolve_program("/nonexistent/ws", None).is_err());
        let plain = std::env::temp_dir().join(format!("ism-not-executable-{}", std::process::id()));
        std::fs::write(&plain, "data").unwrap();
        let err = resolve_program(plain.to_str().unwrap(), None).unwrap_err();
        let _ = std::fs::remove_file(&plain);
        assert!(matches!(err, SpawnError::NotExecutable(_)), "{err}");
        assert!(matches!(
            resolve_program("no-such-program-here", None),
            Err(SpawnError::NotOnPath(_))
        ));
    }
}
