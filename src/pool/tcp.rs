//! The socket under worker calls: ureq's TCP transport, less its system calls.
//!
//! ureq's own `TcpTransport` costs a worker call eight system calls that do nothing for it:
//! - Before a pooled connection is reused, and again when it goes back to the pool, ureq asks
//!   whether the worker closed it (`is_open`). ureq's answer switches the socket to
//!   non-blocking, reads, and switches it back: three calls. Here it is one `recv` with
//!   `MSG_PEEK | MSG_DONTWAIT`, which leaves the socket's mode alone.
//! - ureq sets `SO_SNDTIMEO` before each send and `SO_RCVTIMEO` before each wait, because its
//!   deadline is a time left, which is a little shorter at every call. Here the time left is
//!   rounded up to a step of about a 64th of it (`rounded_up`), and the socket is only told
//!   when the rounded value changes: a call may end a 64th late, never early.

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

#[derive(Debug)]
pub struct TcpTransport {
    /// Shared (weakly) with the agent, which shuts it down to interrupt a call at shutdown.
    stream: Arc<TcpStream>,
    buffers: LazyBuffers,
    /// The socket's timeouts as last set.
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
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
        let at = timeout.not_zero().map(|left| Instant::now() + *left);
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

/// Sets the socket's timeout (through `set`) to `wanted` rounded up, unless it is set to that
/// already.
fn keep_timeout(
    current: &mut Option<Duration>,
    wanted: Option<Duration>,
    set: impl FnOnce(Option<Duration>) -> io::Result<()>,
) -> io::Result<()> {
    let rounded = wanted.map(rounded_up);
    if rounded != *current {
        set(rounded)?;
        *current = rounded;
    }
    Ok(())
}

/// `left` rounded up to a whole number of steps, a step being the power of two milliseconds
/// nearest above a 64th of it: the calls of one request, and the requests that follow it with
/// the same timeout, round to the same value.
fn rounded_up(left: Duration) -> Duration {
    let millis = u64::try_from(left.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX / 2)
        .max(1);
    let step = (millis / 64).max(1).next_power_of_two();
    Duration::from_millis(millis.div_ceil(step) * step)
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
    fn time_left_rounds_up_by_at_most_a_64th_and_to_one_value_a_timeout() {
        for micros in [
            1,
            1_500,
            2_000,
            63_999,
            64_000,
            65_001,
            999_000,
            2_000_000,
            30_000_000,
            3_600_000_000,
        ] {
            let left = Duration::from_micros(micros);
            let rounded = rounded_up(left);
            assert!(rounded >= left, "{micros} us: {rounded:?}");
            assert!(
                rounded <= left + left / 32 + Duration::from_millis(1),
                "{micros} us: {rounded:?}"
            );
        }
        // The calls of a 30 s timeout, a few milliseconds apart, set the socket once.
        let first = rounded_up(Duration::from_micros(29_999_990));
        assert_eq!(rounded_up(Duration::from_micros(29_996_000)), first);
        assert_eq!(rounded_up(Duration::from_micros(29_999_999)), first);
    }

    #[test]
    fn the_socket_is_told_a_timeout_only_when_it_changes() {
        let mut current = None;
        let mut told = Vec::new();
        for left in [29_999_990, 29_999_000, 29_990_000, 1_500, 1_499] {
            keep_timeout(&mut current, Some(Duration::from_micros(left)), |t| {
                told.push(t);
                Ok(())
            })
            .unwrap();
        }
        assert_eq!(told.len(), 2, "{told:?}");
        keep_timeout(&mut current, None, |t| {
            told.push(t);
            Ok(())
        })
        .unwrap();
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
    fn time_already_up_is_a_timeout_before_any_io() {
        let (mut transport, _server) = connected();
        let over = transport.await_input(within(0));
        assert!(matches!(over, Err(ureq::Error::Timeout(_))), "{over:?}");
    }
}
