//! Rack mode's transport: newline-delimited JSON-RPC on TCP `rack.port`. A fixed pool of
//! threads each accepts a connection and serves it line by line until the peer closes it, the
//! read timeout passes, or a line is too long. No async, no thread per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::engine::Engine;

/// Connections served at once: an orchestrator keeps a few open, not hundreds.
const RACK_THREADS: usize = 8;

/// An idle connection is closed after this, so a silent peer cannot hold a thread forever.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Bytes a line may carry beyond `maxBodyBytes` (the JSON around the base64 audio).
const LINE_OVERHEAD: u64 = 64 * 1024;

pub struct RackServer {
    pub addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl RackServer {
    /// Binds `host:port` and starts the connection threads.
    pub fn start(engine: Arc<Engine>, host: &str, port: u16) -> std::io::Result<RackServer> {
        let listener = TcpListener::bind((host, port))?;
        let addr = listener.local_addr()?;
        let listener = Arc::new(listener);
        let stopping = Arc::new(AtomicBool::new(false));
        let threads = (0..RACK_THREADS)
            .map(|i| {
                let (engine, listener, stopping) = (
                    Arc::clone(&engine),
                    Arc::clone(&listener),
                    Arc::clone(&stopping),
                );
                std::thread::Builder::new()
                    .name(format!("rack-{i}"))
                    .spawn(move || accept_loop(&engine, &listener, &stopping))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RackServer {
            addr,
            stopping,
            threads,
        })
    }

    /// Stops accepting; connections being served finish their current line.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // Each thread blocked in accept() is woken by one connection of our own.
        let wake = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            other => other,
        };
        for _ in &self.threads {
            let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(200));
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn accept_loop(engine: &Engine, listener: &TcpListener, stopping: &AtomicBool) {
    while !stopping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) if !stopping.load(Ordering::SeqCst) => {
                if let Err(e) = serve(engine, stream) {
                    log::debug!("rack connection from {peer} ended: {e}");
                }
            }
            Ok(_) => return,
            Err(e) => {
                log::warn!("rack accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One connection: a JSON-RPC message per line in, a response per line out.
fn serve(engine: &Engine, stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let limit = engine.settings.server.max_body_bytes + LINE_OVERHEAD;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = (&mut reader).take(limit + 1).read_until(b'\n', &mut line)?;
        if read == 0 {
            return Ok(());
        }
        if line.len() as u64 > limit {
            let answer = super::error_line(
                super::INVALID_REQUEST,
                &format!("a message is limited to {limit} bytes"),
            );
            writer.write_all(answer.as_bytes())?;
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        if text.trim().is_empty() {
            continue;
        }
        if let Some(answer) = super::handle(engine, &text) {
            writer.write_all(format!("{answer}\n").as_bytes())?;
        }
    }
}
