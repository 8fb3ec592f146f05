//! Rack mode's transport: newline-delimited JSON-RPC on TCP `rack.port`. One thread accepts;
//! each connection is served on a thread of its own (parked, and cheap, while the peer is
//! idle), so no connection, idle or slow, holds up another. A connection is closed when the
//! peer is idle for `IDLE_TIMEOUT`, silent mid-message for `server.readTimeoutMs`, or slower
//! than `server.requestTimeoutMs` to send one whole message, and when a message is too long.
//! No async.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Transport;
use crate::engine::Engine;

/// Connections served at once: an orchestrator keeps a few open, not hundreds. Past this a
/// new connection is told so and closed.
const MAX_CONNECTIONS: usize = 256;

/// A connection with no message under way is closed after this.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes a line may carry beyond `maxBodyBytes` (the JSON around the base64 audio).
const LINE_OVERHEAD: u64 = 64 * 1024;

/// How long `stop` waits for messages being answered.
const STOP_WAIT: Duration = Duration::from_secs(30);

pub struct RackServer {
    pub addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    /// Messages being answered right now, waited for by `stop`.
    answering: Arc<AtomicUsize>,
    acceptor: JoinHandle<()>,
}

/// What every connection thread shares.
struct Shared {
    engine: Arc<Engine>,
    stopping: Arc<AtomicBool>,
    answering: Arc<AtomicUsize>,
    connections: AtomicUsize,
}

impl RackServer {
    /// Binds `host:port` and starts the accepting thread.
    pub fn start(engine: Arc<Engine>, host: &str, port: u16) -> std::io::Result<RackServer> {
        let listener = TcpListener::bind((host, port))?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let answering = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            engine,
            stopping: Arc::clone(&stopping),
            answering: Arc::clone(&answering),
            connections: AtomicUsize::new(0),
        });
        let acceptor = std::thread::Builder::new()
            .name("rack".into())
            .spawn(move || accept_loop(&shared, &listener))?;
        Ok(RackServer {
            addr,
            stopping,
            answering,
            acceptor,
        })
    }

    /// Stops accepting and waits (up to `STOP_WAIT`) for the messages being answered; idle
    /// connections are left to close with the process.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // The thread blocked in accept() is woken by one connection of our own.
        let wake = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            other => other,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
        let _ = self.acceptor.join();
        let deadline = Instant::now() + STOP_WAIT;
        while self.answering.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener) {
    while !shared.stopping.load(Ordering::SeqCst) {
        let (mut stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                log::warn!("rack accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        if shared.connections.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            let refusal = super::error_line(
                super::SERVER_ERROR,
                &format!("ERR_CAPACITY_EXCEEDED: {MAX_CONNECTIONS} rack connections are open"),
            );
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(refusal.as_bytes());
            continue;
        }
        let connection = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name("rack-conn".into())
            .spawn(move || {
                if let Err(e) = serve(&connection, stream) {
                    log::debug!("rack connection from {peer} ended: {e}");
                }
                connection.connections.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            shared.connections.fetch_sub(1, Ordering::SeqCst);
            log::warn!("cannot start a rack connection thread: {e}");
        }
    }
}

/// Why a connection was closed on the peer's account.
fn closed(why: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::TimedOut, why)
}

/// One connection: a JSON-RPC message per line in, a response per line out.
fn serve(shared: &Shared, stream: TcpStream) -> std::io::Result<()> {
    let settings = &shared.engine.settings;
    let (read_timeout, message_deadline) = (
        settings.server.read_timeout(),
        settings.server.request_timeout(),
    );
    stream.set_write_timeout(Some(settings.server.write_timeout()))?;
    let mut writer = stream.try_clone()?;
    let limit = settings.server.max_body_bytes + LINE_OVERHEAD;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        // Idle: wait for the first byte of the next message.
        reader.get_ref().set_read_timeout(Some(IDLE_TIMEOUT))?;
        if reader.fill_buf()?.is_empty() || shared.stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        // A message has begun: all of it must come within the deadline.
        let deadline = Instant::now() + message_deadline;
        line.clear();
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
            reader
                .get_ref()
                .set_read_timeout(Some(left.min(read_timeout)))?;
            let available = match reader.fill_buf() {
                Ok(available) => available,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(closed(format!("silent mid-message: {e}")))
                }
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                return Ok(());
            }
            let (taken, complete) = match available.iter().position(|b| *b == b'\n') {
                Some(end) => (end + 1, true),
                None => (available.len(), false),
            };
            line.extend_from_slice(&available[..taken]);
            reader.consume(taken);
            if line.len() as u64 > limit {
                let answer = super::error_line(
                    super::INVALID_REQUEST,
                    &format!("a message is limited to {limit} bytes"),
                );
                writer.write_all(answer.as_bytes())?;
                return Ok(());
            }
            if complete {
                break;
            }
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        shared.answering.fetch_add(1, Ordering::SeqCst);
        let answer = super::handle(&shared.engine, &text, Transport::Rack);
        shared.answering.fetch_sub(1, Ordering::SeqCst);
        if let Some(answer) = answer {
            writer.write_all(format!("{answer}\n").as_bytes())?;
        }
    }
}
