//! The socket under worker calls: ureq's TCP transport, less its system calls.
//!
//! ureq's own `TcpTransport` costs a worker call eight system calls that do nothing for it:
//! - Before a pooled connection is reused, and again when it goes back to the pool, ureq asks
//!   whether the worker closed it (`is_open`). ureq's answer switches the socket to
//!   non-blocking, reads, and switches it back: three calls. Here it is one `recv` with
//!   `MSG_PEEK | MSG_DONTWAIT`, which leaves the socket's mode alone.
//! - ureq sets `SO_SNDTIMEO` before each send and `SO_RCVTIMEO` before each wait, because its
//!   deadline is a time left, which is a little shorter at every call. Here the socket keeps
//!   its timeout while that is at least the time left and at most a 64th of it (and a
//!   millisecond) more, and is given a new one, rounded up (`rounded_up`), otherwise: a call
//!   may end up to a 64th late (besides the kernel timer's own slack), never early.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{recv, MsgFlags};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, ShutdownHandle, Transport,
};

/// Connects to the first address ureq resolved (workers listen on `127.0.0.1`, one address).
#[derive(Debug)]
pub struct Tcp;

impl Connector<()> for Tcp {
    type Out = TcpTransport;

    fn connect(
        &self,
        details: &ConnectionDetails,
        _: Option<()>,
    ) -> Result<Option<TcpTransport>, ureq::Error> {
        let Some(addr) = details.addrs.first() else {
            return Err(ureq::Error::HostNotFound);
        };
        let stream = match details.timeout.not_zero() {
            Some(timeout) => TcpStream::connect_timeout(addr, *timeout),
            None => TcpStream::connect(addr),
        }
        .map_err(|e| timed_out_or(e, details.timeout))?;
        let config = details.config;
        stream.set_nodelay(config.no_delay())?;
        let stream = Arc::new(stream);
        (details.register_shutdown)(Arc::downgrade(&stream) as Weak<dyn ShutdownHandle>)?;
        Ok(Some(TcpTransport {
            stream,
            buffers: LazyBuffers::new(config.input_buffer_size(), config.output_buffer_size()),
            read_timeout: None,
            write_timeout: None,
        }))
    }
}

pub struct TcpTransport {
    /// Shared (weakly) with the agent, which shuts it down to interrupt a call at shutdown.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    /// The socket's timeouts as last set.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

/// The peer's address, as ureq's own transport shows itself (not its buffers).
impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}

impl Transport for TcpTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let timeout = timeout.for_write();
        let deadline = Deadline::of(timeout)?;
        let mut output = &self.buffers.output()[..amount];
        while !output.is_empty() {
            let wanted = deadline.left()?;
            keep_timeout(&mut self.write_timeout, wanted, |t| {
                self.stream.set_write_timeout(t)
            })?;
            match (&*self.stream).write(output) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero).into()),
                Ok(n) => output = &output[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out_or(e, timeout)),
            }
        }
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let timeout = timeout.for_read();
        let deadline = Deadline::of(timeout)?;
        loop {
            let wanted = deadline.left()?;
            keep_timeout(&mut self.read_timeout, wanted, |t| {
                self.stream.set_read_timeout(t)
            })?;
            match (&*self.stream).read(self.buffers.input_append_buf()) {
                Ok(n) => {
                    self.buffers.input_appended(n);
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timed_out_or(e, timeout)),
            }
        }
    }

    /// Open when nothing is waiting to be read and the worker has not closed its end: a byte
    /// that came unasked means the last answer was not what it said, and the connection is
    /// not reused either.
    fn is_open(&mut self) -> bool {
        let flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT;
        matches!(
            recv(self.stream.as_raw_fd(), &mut [0], flags),
            Err(Errno::EAGAIN)
        )
    }
}

/// When a call's time is up, from ureq's time left at its start (`None`: never).
struct Deadline {
    at: Option<Instant>,
    timeout: NextTimeout,
}

impl Deadline {
    fn of(timeout: NextTimeout) -> Result<Deadline, ureq::Error> {
        if timeout.after.is_zero() {
            return Err(ureq::Error::Timeout(timeout.reason));
        }
        // A time left past what an `Instant` can hold is as good as none.
        let at = timeout
            .not_zero()
            .and_then(|left| Instant::now().checked_add(*left));
        Ok(Deadline { at, timeout })
    }

    /// The time left, or ureq's timeout error once there is none.
    fn left(&self) -> Result<Option<Duration>, ureq::Error> {
        let Some(at) = self.at else {
            return Ok(None);
        };
        let left = at.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ureq::Error::Timeout(self.timeout.reason));
        }
        Ok(Some(left))
    }
}

/// Sets the socket's timeout (through `set`) to `wanted` rounded up, unless the one it has
/// will do: never shorter than `wanted`, and longer by no more than `slack(wanted)`. The calls
/// of one request, and the requests after it with the same timeout, keep one value.
fn keep_timeout(
    current: &mut Option<Duration>,
    wanted: Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let will_do = match (*current, wanted) {
        (Some(current), Some(wanted)) => current >= wanted && current - wanted <= slack(wanted),
        (None, None) => true,
        _ => false,
    };
    if !will_do {
        let rounded = wanted.map(rounded_up);
        set(rounded)?;
        *current = rounded;
    }
    Ok(())
}

/// How much later than asked a call may give up: a 64th of its time, and a millisecond.
fn slack(wanted: Duration) -> Duration {
    wanted / 64 + Duration::from_millis(1)
}

/// `left` rounded up to a whole number of milliseconds and then of steps, a step being the
/// largest power of two milliseconds within a 64th of it: at most `slack(left)` more, and the
/// same value for times left a little apart. A time too long to round is left as it is.
fn rounded_up(left: Duration) -> Duration {
    let Ok(millis) = u64::try_from(left.as_nanos().div_ceil(1_000_000)) else {
        return left;
    };
    let step = 1u64 << (millis / 64).max(1).ilog2();
    millis
        .div_ceil(step)
        .checked_mul(step)
        .map_or(left, Duration::from_millis)
}

/// A socket timeout is reported as ureq's timeout of the call, anything else as it is.
fn timed_out_or(e: io::Error, timeout: NextTimeout) -> ureq::Error {
    match e.kind() {
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ureq::Error::Timeout(timeout.reason),
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use ureq::unversioned::transport::time::Duration as UreqDuration;
    use ureq::Timeout;

    fn within(seconds: u64) -> NextTimeout {
        NextTimeout {
            after: UreqDuration::from_secs(seconds),
            reason: Timeout::Global,
            per_read: None,
            per_write: None,
        }
    }

    #[test]
    fn time_left_rounds_up_within_its_slack_and_to_one_value_for_a_timeout() {
        let micros = [
            1,
            1_500,
            2_000,
            63_999,
            64_000,
            65_001,
            999_000,
            2_000_000,
            24_600_000,
            30_000_000,
            32_832_000,
            3_600_000_000,
        ];
        for left in micros.map(Duration::from_micros) {
            let rounded = rounded_up(left);
            assert!(rounded >= left, "{left:?}: {rounded:?}");
            assert!(rounded - left <= slack(left), "{left:?}: {rounded:?}");
        }
        for huge in [Duration::from_millis(u64::MAX), Duration::MAX] {
            assert!(rounded_up(huge) >= huge, "{huge:?}");
        }
        // The calls of a 30 s timeout, a few milliseconds apart, round alike.
        let first = rounded_up(Duration::from_micros(29_999_990));
        assert_eq!(rounded_up(Duration::from_micros(29_996_000)), first);
        assert_eq!(rounded_up(Duration::from_micros(29_999_999)), first);
    }

    #[test]
    fn the_socket_is_told_a_timeout_only_when_the_one_it_has_will_not_do() {
        let mut current = None;
        let mut told = Vec::new();
        let mut ask = |current: &mut Option<Duration>, left: Option<Duration>| {
            keep_timeout(current, left, |t| {
                told.push(t);
                Ok(())
            })
            .unwrap();
            // Whatever was done, the socket's timeout is not shorter than the time left.
            assert!(current.unwrap_or(Duration::MAX) >= left.unwrap_or(Duration::MAX));
        };
        // A timeout just over a step's edge (a 29,700 ms one, after varying time in the queue)
        // is set once, where rounding alone flapped between two values.
        let edge = [29_700_010, 29_699_000, 29_700_020, 29_690_000, 29_700_001];
        assert_ne!(
            rounded_up(Duration::from_micros(edge[0])),
            rounded_up(Duration::from_micros(edge[3]))
        );
        for left in edge {
            ask(&mut current, Some(Duration::from_micros(left)));
        }
        ask(&mut current, Some(Duration::from_micros(1_500)));
        ask(&mut current, Some(Duration::from_micros(1_499)));
        ask(&mut current, None);
        // Once for the 29.7 s, once for 1.5 ms (2 ms, which does for 1.499 ms), once for none.
        assert_eq!(told.len(), 3, "{told:?}");
        assert_eq!(told.last(), Some(&None));
    }

    /// A transport over a real socket, and the server's end of it.
    fn connected() -> (TcpTransport, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let transport = TcpTransport {
            stream: Arc::new(client),
            buffers: LazyBuffers::new(1024, 1024),
            read_timeout: None,
            write_timeout: None,
        };
        (transport, server)
    }

    #[test]
    fn open_until_bytes_come_unasked_or_the_peer_closes() {
        let (mut transport, mut server) = connected();
        assert!(transport.is_open());
        assert!(transport.is_open(), "asking reads nothing");
        server.write_all(b"x").unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(!transport.is_open(), "a byte came unasked");

        let (mut transport, server) = connected();
        drop(server);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!transport.is_open(), "the peer closed");
    }

    #[test]
    fn a_send_and_an_answer_go_through_and_a_silent_peer_times_out() {
        let (mut transport, mut server) = connected();
        transport.buffers().output()[..4].copy_from_slice(b"ping");
        transport.transmit_output(4, within(5)).unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").unwrap();
        assert!(transport.await_input(within(5)).unwrap());
        assert_eq!(transport.buffers().input(), b"pong");

        let started = Instant::now();
        let waited = transport.await_input(NextTimeout {
            after: UreqDuration::Exact(Duration::from_millis(200)),
            ..within(0)
        });
        assert!(
            matches!(waited, Err(ureq::Error::Timeout(Timeout::Global))),
            "{waited:?}"
        );
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn a_time_left_too_long_for_an_instant_is_no_deadline() {
        let forever = NextTimeout {
            after: UreqDuration::Exact(Duration::MAX),
            ..within(0)
        };
        assert!(Deadline::of(forever).unwrap().left().unwrap().is_none());
    }

    #[test]
    fn time_already_up_is_a_timeout_before_any_io() {
        let (mut transport, _server) = connected();
        let over = transport.await_input(within(0));
        assert!(matches!(over, Err(ureq::Error::Timeout(_))), "{over:?}");
    }
}
