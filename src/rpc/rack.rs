//! Rack mode's transport: newline-delimited JSON-RPC on TCP `rack.port`, no async.
//!
//! One `rack` thread accepts connections and waits, with poll(2), on every connection that has
//! no message under way: an idle connection costs a socket and nothing else. When one has
//! something to read, a `rack-conn` thread of its own reads that one message, answers it and
//! hands the connection back. So no connection owns a thread while idle, and a slow one holds
//! only its own thread, until its message deadline. A connection is closed when idle for
//! `IDLE_TIMEOUT`, silent mid-message for `server.readTimeoutMs`, slower than
//! `server.requestTimeoutMs` to send one whole message, or when a message is too long.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::Transport;
use crate::engine::Engine;

/// Connections open at once, idle or not: an orchestrator keeps a few, not hundreds. Past this
/// a new connection is told so and closed.
const MAX_CONNECTIONS: usize = 256;

/// A connection with no message under way is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Longest the poller sleeps, so idle connections are closed on time.
const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Bytes a line may carry beyond `maxBodyBytes` (the JSON around the base64 audio).
const LINE_OVERHEAD: u64 = 64 * 1024;

/// How long `stop` waits for messages being answered.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// One connection and what was read ahead on it (a next message may already be buffered).
type Connection = BufReader<TcpStream>;

pub struct RackServer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    poller: JoinHandle<()>,
}

/// What the poller and the message threads share.
struct Shared {
    engine: Arc<Engine>,
    stopping: AtomicBool,
    /// Messages being read or answered right now, waited for by `stop`.
    busy: AtomicUsize,
    /// Connections open, idle or busy.
    open: AtomicUsize,
    /// Connections whose message was answered, back for the poller to wait on.
    returned: Mutex<Vec<Connection>>,
    /// Written to when a connection is returned or the server stops, to wake the poller.
    wake: UnixStream,
}

impl RackServer {
    /// Binds `host:port` and starts the poller.
    pub fn start(engine: Arc<Engine>, host: &str, port: u16) -> std::io::Result<RackServer> {
        let listener = TcpListener::bind((host, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (wake, woken) = UnixStream::pair()?;
        woken.set_nonblocking(true)?;
        wake.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            engine,
            stopping: AtomicBool::new(false),
            busy: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            returned: Mutex::new(Vec::new()),
            wake,
        });
        let poller = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("rack".into())
                .spawn(move || poll_loop(&shared, &listener, &woken))?
        };
        Ok(RackServer {
            addr,
            shared,
            poller,
        })
    }

    /// Stops accepting, closes the idle connections, and waits (up to `STOP_WAIT`) for the
    /// messages being answered.
    pub fn stop(self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = (&self.shared.wake).write(&[1]);
        let _ = self.poller.join();
        let deadline = Instant::now() + STOP_WAIT;
        while self.shared.busy.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The `rack` thread: accepts, and waits on every idle connection at once.
fn poll_loop(shared: &Arc<Shared>, listener: &TcpListener, woken: &UnixStream) {
    let mut idle: Vec<(Connection, Instant)> = Vec::new();
    while !shared.stopping.load(Ordering::SeqCst) {
        let now = Instant::now();
        idle.extend(lock(&shared.returned).drain(..).map(|c| (c, now)));
        let before = idle.len();
        idle.retain(|(_, since)| since.elapsed() < IDLE_TIMEOUT);
        shared.open.fetch_sub(before - idle.len(), Ordering::SeqCst);
        // A message already read ahead needs no wait.
        let (ready, waiting): (Vec<_>, Vec<_>) = idle
            .drain(..)
            .partition(|(connection, _)| !connection.buffer().is_empty());
        idle = waiting;
        for (connection, _) in ready {
            dispatch(shared, connection);
        }
        let readable = {
            let mut fds = vec![
                PollFd::new(listener.as_fd(), PollFlags::POLLIN),
                PollFd::new(woken.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                idle.iter()
                    .map(|(c, _)| PollFd::new(c.get_ref().as_fd(), PollFlags::POLLIN)),
            );
            let timeout = PollTimeout::try_from(POLL_INTERVAL).unwrap_or(PollTimeout::NONE);
            if let Err(e) = poll(&mut fds, timeout) {
                if e != nix::errno::Errno::EINTR {
                    log::warn!("rack poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
                continue;
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect::<Vec<bool>>()
        };
        if readable[1] {
            let mut drained = [0u8; 64];
            while matches!((&*woken).read(&mut drained), Ok(n) if n > 0) {}
        }
        // Connections with something to read (or closed) go to a message thread; walk back so
        // removing one keeps the indices of the others.
        for i in (0..idle.len()).rev() {
            if readable[i + 2] {
                let (connection, _) = idle.swap_remove(i);
                dispatch(shared, connection);
            }
        }
        if readable[0] {
            accept_all(shared, listener, &mut idle);
        }
    }
    shared.open.fetch_sub(idle.len(), Ordering::SeqCst);
}

fn accept_all(shared: &Shared, listener: &TcpListener, idle: &mut Vec<(Connection, Instant)>) {
    loop {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return,
            Err(e) => {
                log::warn!("rack accept failed: {e}");
                return;
            }
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        if shared.open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.open.fetch_sub(1, Ordering::SeqCst);
            let refusal = super::error_line(
                super::SERVER_ERROR,
                &format!("ERR_CAPACITY_EXCEEDED: {MAX_CONNECTIONS} rack connections are open"),
            );
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(refusal.as_bytes());
            continue;
        }
        idle.push((BufReader::new(stream), Instant::now()));
    }
}

/// Reads and answers the message waiting on `connection` on a thread of its own, then hands
/// the connection back to the poller (or closes it).
fn dispatch(shared: &Arc<Shared>, connection: Connection) {
    shared.busy.fetch_add(1, Ordering::SeqCst);
    let worker = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("rack-conn".into())
        .spawn(move || {
            let mut connection = connection;
            match serve_one(&worker, &mut connection) {
                Ok(true) if !worker.stopping.load(Ordering::SeqCst) => {
                    lock(&worker.returned).push(connection);
                    let _ = (&worker.wake).write(&[1]);
                }
                Ok(_) => {
                    worker.open.fetch_sub(1, Ordering::SeqCst);
                }
                Err(e) => {
                    log::debug!("rack connection ended: {e}");
                    worker.open.fetch_sub(1, Ordering::SeqCst);
                }
            }
            worker.busy.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = spawned {
        log::warn!("cannot start a rack message thread: {e}");
        shared.busy.fetch_sub(1, Ordering::SeqCst);
        shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Why a connection was closed on the peer's account.
fn closed(why: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::TimedOut, why)
}

/// Reads one message (a line) and answers it. `Ok(true)` when the connection can carry the
/// next one, `Ok(false)` when the peer closed it.
fn serve_one(shared: &Shared, connection: &mut Connection) -> std::io::Result<bool> {
    let server = &shared.engine.settings.server;
    let (read_timeout, message_deadline) = (server.read_timeout(), server.request_timeout());
    let limit = server.max_body_bytes + LINE_OVERHEAD;
    let mut writer = connection.get_ref().try_clone()?;
    writer.set_write_timeout(Some(server.write_timeout()))?;
    // All of the message must come within the deadline.
    let deadline = Instant::now() + message_deadline;
    let mut line = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let answer = super::error_line(
                super::INVALID_REQUEST,
                &format!(
                    "a message must arrive within {} ms",
                    message_deadline.as_millis()
                ),
            );
            let _ = writer.write_all(answer.as_bytes());
            return Err(closed("a message took too long".into()));
        }
        connection
            .get_ref()
            .set_read_timeout(Some(left.min(read_timeout)))?;
        let available = match connection.fill_buf() {
            Ok(available) => available,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(closed(format!("silent mid-message: {e}")))
            }
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(false);
        }
        let (taken, complete) = match available.iter().position(|b| *b == b'\n') {
            Some(end) => (end + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        connection.consume(taken);
        if line.len() as u64 > limit {
            let answer = super::error_line(
                super::INVALID_REQUEST,
                &format!("a message is limited to {limit} bytes"),
            );
            writer.write_all(answer.as_bytes())?;
            return Ok(false);
        }
        if complete {
            break;
        }
    }
    if !line.trim_ascii().is_empty() {
        if let Some(answer) = super::handle(&shared.engine, &line, Transport::Rack) {
            writer.write_all(format!("{answer}\n").as_bytes())?;
        }
    }
    Ok(true)
}
