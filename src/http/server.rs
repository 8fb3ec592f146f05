//! The fixed pool of request threads, fed by tiny_http.
//!
//! tiny_http's own accept thread is the acceptor: it reads request heads on a thread per
//! connection and queues whole requests; `server.threads` request threads take them from that
//! queue. There is no hand-off thread in between, so a request costs one thread switch less.
//!
//! The listening socket is built here, with `SO_RCVTIMEO` and `SO_SNDTIMEO` set on it: Linux
//! copies both to every socket it accepts, so each connection (which tiny_http never exposes)
//! has a read and a write deadline. A client silent for `readTimeoutMs` (in its head, its body,
//! or between keep-alive requests) is disconnected; one that stops reading its response is cut
//! off after `writeTimeoutMs`.
//!
//! tiny_http's accept thread exits for good on its first accept error (e.g. EMFILE), and (in
//! our copy, `src/vendor/tiny_http/PATCHES.md`) reports a panic, such as a failed
//! `try_clone` when the fd table fills between an accept and the clone, the same way: as an
//! error from `recv`. The request thread that receives it binds a fresh server on the same
//! address (`Listener::replace`) and wakes the others, which move to it. Nothing polls: an
//! idle service has every request thread asleep in `recv`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::Method;

use super::request::{header_value, BodyLimits, Incoming, WorkPermits};
use super::response::{to_tiny, Body, CommonHeaders, Reply};
use super::work_permit_cap;

/// Work permits: a request other than GET, HEAD and OPTIONS (the ones that read a body, queue
/// for a worker, run an inference or load a model) holds one from its arrival until its
/// answer is made, or for a streamed answer until its last event. At most three quarters of
/// the request threads (`work_permit_cap`), so `/health`, `/readyz`, `/api/v1/status` and
/// `/metrics` always find a thread; past the cap a request is answered 503 at once.
///
/// The permit goes back before the answer's first byte is sent: a client that has read its
/// answer may send the next request at once, and must not find its last one still holding a
/// permit (one keep-alive client could take two, and a cap it never passed would answer it
/// 503). Sending an answer from memory is bounded by the socket's write timeout, as for the
/// GETs, which hold no permit.
fn needs_work_permit(method: &Method) -> bool {
    !matches!(method, Method::Get | Method::Head | Method::Options)
}

/// Drains at most at once. A drain belongs to one connection (tiny_http reads the next request
/// on it only after the drain), so drains are bounded by connections, and those by the open
/// files limit; this only keeps a flood from spawning past what the machine can hold.
const MAX_DRAINERS: usize = 4096;

/// First pause between attempts to bind a replacement server after the acceptor died; it
/// doubles up to `MAX_REBIND_PAUSE` so a long fd shortage does not flood the log.
const REBIND_PAUSE: Duration = Duration::from_millis(200);
const MAX_REBIND_PAUSE: Duration = Duration::from_secs(5);

/// A listener that lived this long was a recovery, and the next death starts the pause over.
const STABLE_AFTER: Duration = Duration::from_secs(10);

/// How often the queues of replaced servers are looked at while any exist.
const RETIRED_POLL: Duration = Duration::from_millis(20);

/// Replaced servers whose queues are still served. A rebind happens at most every few
/// seconds during an fd shortage (see `Recovery`), so this covers minutes of one.
const MAX_RETIRED: usize = 64;

/// What the server is handed: the application. The server knows nothing of routes or of what
/// lies behind them; it reads heads, bounds bodies, catches panics and writes responses.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request.
    fn handle(&self, request: &mut Incoming) -> Handled;
    /// Answers a request the server refused before `handle` ran, or whose `handle` panicked.
    fn refused(&self, method: &Method, path: &str, refusal: Refusal) -> Handled;
    /// Hears of every request once its response is sent (the access log and metrics).
    fn answered(&self, answered: &Answered);
}

/// A handler's answer, and the name of what it matched (a route pattern: a metrics label).
pub struct Handled {
    pub reply: Reply,
    pub label: &'static str,
}

/// Why the server answered without the handler's help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The declared body is larger than the limit: answered before a byte of it is read.
    TooLarge { declared: u64, limit: u64 },
    /// Every work permit is taken (see `needs_work_permit`); retry shortly.
    Busy,
    /// `handle` panicked (a bug); the panic message is logged with the request id.
    Panicked,
}

/// One answered request, for `Handler::answered`.
#[derive(Debug)]
pub struct Answered<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub label: &'static str,
    pub status: u16,
    pub elapsed: Duration,
    pub request_id: &'a str,
}

/// What the server needs to know of the settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The fixed number of request threads.
    pub threads: usize,
    /// Longest silence on a connection: in a head, in a body, between keep-alive requests.
    pub read_timeout: Duration,
    /// Longest a response write may block on a client that does not read.
    pub write_timeout: Duration,
    pub limits: BodyLimits,
    pub common: CommonHeaders,
    /// Starts the request ids the server makes up (`<prefix>-<n>`), so ids of this run differ
    /// from those of earlier runs.
    pub request_id_prefix: String,
}

/// The running HTTP front end.
pub struct HttpServer {
    /// The address actually bound (port 0 resolved).
    pub addr: SocketAddr,
    listener: Arc<Listener>,
    workers: Vec<JoinHandle<()>>,
}

/// The tiny_http server in use, and what replacing it takes.
struct Listener {
    addr: SocketAddr,
    /// The deadlines every accepted socket inherits, for a rebound listener too.
    deadlines: Deadlines,
    current: Mutex<Arc<tiny_http::Server>>,
    stopping: AtomicBool,
    /// Rebinding state; holding its lock is what makes one thread rebind while others wait.
    recovery: Mutex<Recovery>,
    /// Requests the server had accepted when shutdown began, served before the threads exit.
    leftovers: Mutex<VecDeque<tiny_http::Request>>,
    /// Servers whose acceptor died and were replaced. Their connections live on (tiny_http
    /// serves each on a thread of its own) and queue their requests there, so those queues are
    /// still served: a request left in one would hold its connection, its thread and its
    /// sockets forever. The oldest go past `MAX_RETIRED`.
    retired: Mutex<VecDeque<Arc<tiny_http::Server>>>,
    /// The request threads, each woken once when the server they wait on is replaced.
    threads: usize,
}

/// State the request threads share.
struct Shared {
    handler: Arc<dyn Handler>,
    permits: Arc<WorkPermits>,
    config: Config,
    drainers: Arc<AtomicUsize>,
    next_request_id: AtomicUsize,
}

/// `SO_RCVTIMEO` and `SO_SNDTIMEO` of the listening socket, which accepted sockets inherit.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    read: Duration,
    write: Duration,
}

/// Why the server could not start.
#[derive(Debug)]
pub enum StartError {
    /// The address could not be bound (in use, not ours, no permission).
    Bind {
        addr: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A thread could not be started.
    Thread(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Thread(e) => write!(f, "cannot start an HTTP thread: {e}"),
        }
    }
}

impl std::error::Error for StartError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StartError::Bind { source, .. } => Some(source.as_ref()),
            StartError::Thread(e) => Some(e),
        }
    }
}

impl HttpServer {
    /// Binds `host:port` (the port is open when this returns) and starts `config.threads`
    /// request threads, each handing requests to `handler`.
    pub fn start(
        host: &str,
        port: u16,
        config: Config,
        handler: Arc<dyn Handler>,
    ) -> Result<HttpServer, StartError> {
        let deadlines = Deadlines {
            read: config.read_timeout,
            write: config.write_timeout,
        };
        let server = bind((host, port), deadlines).map_err(|source| StartError::Bind {
            addr: format!("{host}:{port}"),
            source,
        })?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| StartError::Bind {
                addr: format!("{host}:{port}"),
                source: "the server is not on an IP address".into(),
            })?;
        let threads = config.threads;
        let shared = Arc::new(Shared {
            permits: Arc::new(WorkPermits::new(work_permit_cap(threads))),
            config,
            drainers: Arc::new(AtomicUsize::new(0)),
            next_request_id: AtomicUsize::new(1),
            handler,
        });
        let listener = Arc::new(Listener {
            addr,
            deadlines,
            current: Mutex::new(Arc::new(server)),
            stopping: AtomicBool::new(false),
            recovery: Mutex::new(Recovery::new()),
            leftovers: Mutex::new(VecDeque::new()),
            retired: Mutex::new(VecDeque::new()),
            threads,
        });
        let workers = (0..threads)
            .map(|i| {
                let (listener, shared) = (Arc::clone(&listener), Arc::clone(&shared));
                std::thread::Builder::new()
                    .name(format!("http-{i}"))
                    .spawn(move || {
                        while let Some(request) = listener.next() {
                            handle(request, &shared);
                        }
                    })
                    .map_err(StartError::Thread)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(HttpServer {
            addr,
            listener,
            workers,
        })
    }

    /// Stops accepting (the port closes), then waits up to `drain` for the request threads to
    /// finish the requests they hold. Returns whether they all finished.
    pub fn shutdown(self, drain: Duration) -> bool {
        self.listener.stopping.store(true, Ordering::SeqCst);
        // The real server leaves `current` and gives up what it had accepted; each waiting
        // thread is woken once, and when the last lets go of the server, its port closes.
        let server = std::mem::replace(
            &mut *lock(&self.listener.current),
            Arc::new(unbound_placeholder()),
        );
        {
            let mut leftovers = lock(&self.listener.leftovers);
            while let Ok(Some(request)) = server.try_recv() {
                leftovers.push_back(request);
            }
            for old in lock(&self.listener.retired).iter() {
                while let Ok(Some(request)) = old.try_recv() {
                    leftovers.push_back(request);
                }
            }
        }
        for _ in &self.workers {
            server.unblock();
        }
        drop(server);
        let deadline = Instant::now() + drain;
        while Instant::now() < deadline && self.workers.iter().any(|w| !w.is_finished()) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let finished = self.workers.iter().all(JoinHandle::is_finished);
        if finished {
            for worker in self.workers {
                let _ = worker.join();
            }
        }
        finished
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Listener {
    /// The next request for a request thread; `None` once shutdown has started and nothing it
    /// had accepted is left.
    fn next(&self) -> Option<tiny_http::Request> {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return lock(&self.leftovers).pop_front();
            }
            let (from_retired, any_retired) = self.poll_retired();
            if from_retired.is_some() {
                return from_retired;
            }
            let server = Arc::clone(&lock(&self.current));
            // Asleep until a request comes, or `replace` or `shutdown` wakes this thread; while
            // replaced servers still hold connections, awake every `RETIRED_POLL` for those.
            let received = if any_retired {
                server.recv_timeout(RETIRED_POLL)
            } else {
                server.recv().map(Some)
            };
            match received {
                Ok(Some(request)) => return Some(request),
                _ if self.stopping.load(Ordering::SeqCst) => continue,
                Ok(None) => {}
                // Woken by `replace`: the server was replaced while this thread waited on it.
                Err(_) if !Arc::ptr_eq(&lock(&self.current), &server) => {}
                Err(e) => {
                    log::error!(
                        "the HTTP acceptor stopped ({e}); binding a new listener on {}",
                        self.addr
                    );
                    self.replace(&server);
                }
            }
        }
    }

    /// A request waiting in a retired server's queue, if any, and whether retired servers
    /// exist.
    fn poll_retired(&self) -> (Option<tiny_http::Request>, bool) {
        let retired = lock(&self.retired);
        // Err is the dead acceptor's own error message, already acted on.
        let request = retired
            .iter()
            .find_map(|server| server.try_recv().ok().flatten());
        (request, !retired.is_empty())
    }

    /// Binds a fresh server in place of `dead`, unless another thread already did.
    fn replace(&self, dead: &Arc<tiny_http::Server>) {
        let mut recovery = lock(&self.recovery);
        if !Arc::ptr_eq(&lock(&self.current), dead) {
            return;
        }
        let fresh = recovery.rebind(self.addr, self.deadlines, &self.stopping);
        let old = std::mem::replace(&mut *lock(&self.current), Arc::new(fresh));
        // Every thread asleep on the dead server wakes (one `unblock` each) and moves to the
        // fresh one; a wake-up left over is taken, as nothing, from the retired queue later.
        for _ in 0..self.threads {
            old.unblock();
        }
        let mut retired = lock(&self.retired);
        retired.push_back(old);
        if retired.len() > MAX_RETIRED {
            retired.pop_front();
        }
    }
}

/// Rebinding after the acceptor died, with a pause that grows while it keeps dying (a full fd
/// table kills a fresh listener at once) so a long shortage neither spins nor floods the log.
struct Recovery {
    pause: Duration,
    last_rebind: Option<Instant>,
}

impl Recovery {
    fn new() -> Recovery {
        Recovery {
            pause: REBIND_PAUSE,
            last_rebind: None,
        }
    }

    /// Binds a new server on `addr`, retrying until it works or shutdown starts.
    fn rebind(
        &mut self,
        addr: SocketAddr,
        deadlines: Deadlines,
        stopping: &AtomicBool,
    ) -> tiny_http::Server {
        if self
            .last_rebind
            .is_some_and(|at| at.elapsed() < STABLE_AFTER)
        {
            self.wait();
        } else {
            self.pause = REBIND_PAUSE;
        }
        loop {
            match bind(addr, deadlines) {
                Ok(server) => {
                    log::info!("listening again on http://{addr}");
                    self.last_rebind = Some(Instant::now());
                    return server;
                }
                Err(e) if !stopping.load(Ordering::SeqCst) => {
                    log::warn!(
                        "cannot bind {addr} yet ({e}); retrying in {} ms",
                        self.pause.as_millis()
                    );
                    self.wait();
                }
                Err(_) => return unbound_placeholder(),
            }
        }
    }

    fn wait(&mut self) {
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(MAX_REBIND_PAUSE);
    }
}

/// A tiny_http server on a listening socket of our own, whose deadlines every connection
/// it accepts inherits (Linux copies `SO_RCVTIMEO`/`SO_SNDTIMEO` to accepted sockets).
fn bind(
    addr: impl std::net::ToSocketAddrs,
    deadlines: Deadlines,
) -> Result<tiny_http::Server, Box<dyn std::error::Error + Send + Sync>> {
    use nix::sys::socket::{setsockopt, sockopt};
    use nix::sys::time::TimeVal;
    let listener = std::net::TcpListener::bind(addr)?;
    let timeval = |d: Duration| TimeVal::new(d.as_secs() as _, d.subsec_micros() as _);
    setsockopt(&listener, sockopt::ReceiveTimeout, &timeval(deadlines.read))?;
    setsockopt(&listener, sockopt::SendTimeout, &timeval(deadlines.write))?;
    tiny_http::Server::from_listener(listener, None)
}

/// A server on an ephemeral loopback port that stands in after shutdown, so the real listener
/// can be dropped (and its port closed) while `current` still holds something.
fn unbound_placeholder() -> tiny_http::Server {
    tiny_http::Server::http("127.0.0.1:0").expect("binding an ephemeral loopback port")
}

/// Answers one request. A panic in the handler becomes its `Refusal::Panicked` answer and this
/// thread lives on.
fn handle(mut request: tiny_http::Request, shared: &Shared) {
    let started = Instant::now();
    let request_id = request_id(&request, shared);
    let method = request.method().clone();
    let path = request
        .url()
        .split('?')
        .next()
        .unwrap_or_default()
        .to_string();
    let handler = &shared.handler;
    let answered = |label, status| {
        handler.answered(&Answered {
            method: &method,
            path: &path,
            label,
            status,
            elapsed: started.elapsed(),
            request_id: &request_id,
        })
    };
    let declared = request.body_length().map(|n| n as u64);
    let limit = shared.config.limits.max_bytes;
    let permit = if needs_work_permit(&method) {
        shared.permits.try_acquire().map(Some).ok_or(Refusal::Busy)
    } else {
        Ok(None)
    };
    let refusal = match (declared.filter(|n| *n > limit), &permit) {
        (Some(length), _) => Some(Refusal::TooLarge {
            declared: length,
            limit,
        }),
        (None, Err(busy)) => Some(busy.clone()),
        (None, Ok(_)) => None,
    };
    if let Some(refusal) = refusal {
        drop(permit);
        let handled = handler.refused(&method, &path, refusal);
        let status = handled.reply.status;
        let response = to_tiny(handled.reply, &shared.config.common, &request_id);
        let close = leaves_chunks_unread(&request);
        refuse_unread(request, response, close, shared);
        return answered(handled.label, status);
    }
    let (handled, body_read, body_broke_off) = {
        let mut incoming = Incoming::new(&mut request, shared.config.limits);
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| handler.handle(&mut incoming)));
        let handled = outcome.unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            log::error!("handler panicked on {method} {path}: {what} [{request_id}]");
            handler.refused(&method, &path, Refusal::Panicked)
        });
        (handled, incoming.body_was_read(), incoming.body_broke_off())
    };
    let status = handled.reply.status;
    let reply = match permit {
        Ok(Some(permit)) => handled.reply.hold_while_streaming(permit),
        _ => handled.reply,
    };
    let response = to_tiny(reply, &shared.config.common, &request_id);
    // A body tiny_http holds whole (short, and arrived with its head) costs nothing to drop;
    // any other unread body is drained off this thread, since it may never come.
    let unread_body = !body_read && !request.body_in_memory();
    let close = body_broke_off || (unread_body && leaves_chunks_unread(&request));
    if unread_body {
        refuse_unread(request, response, close, shared);
    } else {
        send(request, response, close);
    }
    answered(handled.label, status);
}

/// Whether answering `request` without reading its body must end the connection: a chunked
/// body can only be skipped by decoding it, which tiny_http does not do (it drains a body of
/// known length on drop), so its chunks would be read as the next request.
fn leaves_chunks_unread(request: &tiny_http::Request) -> bool {
    !request.body_in_memory() && request.body_length().is_none()
}

/// Sends an answer. With `close` (the request's body broke off or its chunks were left
/// unread, so where the next request would begin is not known) the connection ends after
/// it, announced by `Connection: close`.
fn send(request: tiny_http::Request, response: tiny_http::Response<Body>, close: bool) {
    let sent = if close {
        request.respond_and_close(response)
    } else {
        request.respond(response)
    };
    if let Err(e) = sent {
        log::debug!("could not send the response: {e}");
    }
}

/// Answers a request whose body was not read, and leaves the drain tiny_http does on drop (it
/// reads the rest of the body, so the connection can carry the next request) to a short-lived
/// thread of its own: the answer never waits for a body nobody wants. The drain ends when the
/// client has sent the body, closes, or is silent for `readTimeoutMs`. Past `MAX_DRAINERS`
/// at once the request thread drains it itself. `close` is `send`'s.
fn refuse_unread(
    request: tiny_http::Request,
    response: tiny_http::Response<Body>,
    close: bool,
    shared: &Shared,
) {
    if shared.drainers.fetch_add(1, Ordering::AcqRel) >= MAX_DRAINERS {
        shared.drainers.fetch_sub(1, Ordering::AcqRel);
        send(request, response, close);
        return;
    }
    let guard = DrainerSlot(Arc::clone(&shared.drainers));
    // Answer at once; the thread then lives as long as the drain.
    let drain = move || {
        let _guard = guard;
        send(request, response, close);
    };
    if let Err(e) = std::thread::Builder::new()
        .name("drain".into())
        .spawn(drain)
    {
        log::warn!("cannot start a drain thread ({e}); the request was answered with a 500");
    }
}

/// One of the drain places, given back when the drain ends (or never starts).
struct DrainerSlot(Arc<AtomicUsize>);

impl Drop for DrainerSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client's `X-Request-Id` when it is short printable ASCII, else a fresh one.
fn request_id(request: &tiny_http::Request, shared: &Shared) -> String {
    header_value(request, "X-Request-Id")
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map(String::from)
        .unwrap_or_else(|| {
            let n = shared.next_request_id.fetch_add(1, Ordering::Relaxed);
            format!("{}-{n}", shared.config.request_id_prefix)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;

    fn deadlines(each: Duration) -> Deadlines {
        Deadlines {
            read: each,
            write: each,
        }
    }

    fn connect_and_ask(port: u16) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        stream
    }

    /// Requests received from `server` within `limit`, held unanswered (so each keeps its
    /// connection's thread busy), up to `wanted`.
    fn receive(server: &tiny_http::Server, wanted: usize, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        let mut held = Vec::new();
        while held.len() < wanted && Instant::now() < deadline {
            if let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(50)) {
                held.push(request);
            }
        }
        held.len()
    }

    const BURST: usize = 64;

    #[test]
    fn a_burst_of_new_connections_is_read_at_once() {
        // tiny_http's connection pool used to queue a burst behind the few idle threads that
        // had not woken yet (PATCHES.md): the other connections waited until one of those
        // finished its whole keep-alive connection.
        let server = bind(("127.0.0.1", 0), deadlines(Duration::from_secs(5))).unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        // All connected before any asks, so they reach the accept thread as one burst.
        let mut clients: Vec<TcpStream> = (0..BURST)
            .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
            .collect();
        for client in &mut clients {
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
        }
        assert_eq!(receive(&server, BURST, Duration::from_secs(2)), BURST);
    }

    /// Wakes every thread waiting on `server` when dropped, so a failed assertion ends them.
    struct Unblock(Arc<tiny_http::Server>, usize);

    impl Drop for Unblock {
        fn drop(&mut self) {
            for _ in 0..self.1 {
                self.0.unblock();
            }
        }
    }

    #[test]
    fn the_thread_that_waited_last_takes_the_next_request() {
        // Upstream tiny_http woke the thread idle longest (PATCHES.md), so with many request
        // threads each request ran on a cold one.
        const THREADS: usize = 16;
        const REQUESTS: usize = 40;
        let server = bind(("127.0.0.1", 0), deadlines(Duration::from_secs(5))).unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        let server = Arc::new(server);
        let served_by = Arc::new(Mutex::new(Vec::new()));
        // Threads about to wait, or waiting, for a request.
        let idle = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let (server, served_by) = (Arc::clone(&server), Arc::clone(&served_by));
                let idle = Arc::clone(&idle);
                std::thread::spawn(move || loop {
                    idle.fetch_add(1, Ordering::SeqCst);
                    let Ok(request) = server.recv() else { return };
                    idle.fetch_sub(1, Ordering::SeqCst);
                    lock(&served_by).push(i);
                    let _ = request.respond(tiny_http::Response::empty(200));
                })
            })
            .collect();
        let unblock = Unblock(Arc::clone(&server), THREADS);
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        for _ in 0..REQUESTS {
            // Every thread waits again before the next request (the few microseconds from
            // the count to the queue are covered by the pause).
            let deadline = Instant::now() + Duration::from_secs(5);
            while idle.load(Ordering::SeqCst) < THREADS && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(2));
            client
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            read_head(&mut client);
        }
        drop(unblock);
        for thread in threads {
            thread.join().unwrap();
        }
        let mut distinct = lock(&served_by).clone();
        assert_eq!(distinct.len(), REQUESTS);
        distinct.sort_unstable();
        distinct.dedup();
        // One thread; waking the oldest first cycles through all 16.
        assert!(distinct.len() <= 2, "served by threads {distinct:?}");
    }

    /// Reads a response head (the responses here have no body).
    fn read_head(stream: &mut TcpStream) {
        use std::io::Read;
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1, "the connection closed");
            head.push(byte[0]);
        }
    }

    #[test]
    fn a_quiet_listener_keeps_accepting_past_its_read_deadline() {
        // Accepted sockets inherit the listener's SO_RCVTIMEO, which accept(2) also honours:
        // a quiet spell longer than it is a timed-out accept, not a dead acceptor.
        let server = bind(("127.0.0.1", 0), deadlines(Duration::from_millis(30))).unwrap();
        let port = server.server_addr().to_ip().unwrap().port();
        std::thread::sleep(Duration::from_millis(150));
        let _client = connect_and_ask(port);
        assert_eq!(receive(&server, 1, Duration::from_secs(2)), 1);
    }
}
