//! Whether a request's client is still there, for a handler whose answer takes long: a
//! transcription of hours of audio should not go on for a client that left. A stream hears
//! it at the next event it cannot deliver; an ordinary answer has nothing to deliver until
//! the end, so it asks the kernel about the connection between chunks.

use tiny_http::PeerProbe;

/// The connection a request came on (from tiny_http, PATCHES.md item 11).
#[derive(Debug, Clone, Copy)]
pub struct Peer(Option<PeerProbe>);

impl Peer {
    pub fn of(request: &tiny_http::Request) -> Peer {
        Peer(request.peer_probe())
    }

    /// Whether the client closed its side of the connection (its FIN came: the socket is in
    /// CLOSE_WAIT) or reset it. Read from the connection's TCP state, not with a read:
    /// tiny_http shuts its reading half down (SHUT_RD) once no more requests will come on the
    /// connection (`Connection: close`), and after that a read cannot tell the client's FIN
    /// from that shutdown. A client that half-closes after sending (rare in HTTP/1.1) counts
    /// as gone. Unknown (TLS, a test request, not Linux) counts as there.
    pub fn hung_up(&self) -> bool {
        self.0
            .is_some_and(|probe| tcp_state(probe.0).is_some_and(closed_by_peer))
    }
}

/// Linux's TCP states after the peer's FIN or reset (include/net/tcp_states.h), which libc
/// does not name.
fn closed_by_peer(state: u8) -> bool {
    const TCP_CLOSE: u8 = 7;
    const TCP_CLOSE_WAIT: u8 = 8;
    matches!(state, TCP_CLOSE | TCP_CLOSE_WAIT)
}

/// The TCP state of socket `fd` (`TCP_INFO`), or `None` when the kernel does not say.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn tcp_state(fd: tiny_http::RawSocket) -> Option<u8> {
    use nix::libc;
    // SAFETY: tcp_info is plain integers, for which all zeros is a value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is as large as `len` says and the kernel writes at most `len` bytes; `fd`
    // is the request's socket, which its response writer keeps open while the request lives
    // (`PeerProbe`), and a handler asks only while it holds the request.
    let got = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    (got == 0).then_some(info.tcpi_state)
}

#[cfg(not(target_os = "linux"))]
fn tcp_state(_: tiny_http::RawSocket) -> Option<u8> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn a_socket_whose_peer_closed_is_told_from_one_shut_here_and_one_open() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        use std::os::fd::AsRawFd;
        let state = || tcp_state(server.as_raw_fd()).unwrap();
        assert!(!closed_by_peer(state()), "open");
        // Our own reading half shut, as tiny_http does after `Connection: close`.
        server.shutdown(std::net::Shutdown::Read).unwrap();
        assert!(!closed_by_peer(state()), "shut here, not by the client");
        client.write_all(b"x").unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = (&server).read_to_end(&mut rest);
        let closed = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(5));
            closed_by_peer(state())
        });
        assert!(closed, "the client's FIN came: {}", state());
    }
}
