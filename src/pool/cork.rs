//! A worker call's head and body in one write.
//!
//! ureq transmits a request's head on its own and then its body: two sends, and on a loopback
//! socket with `TCP_NODELAY`, two segments. The worker (whisper-server, or the stub, both
//! thread-per-connection servers) is woken for the head alone, finds no body yet and waits
//! again, and the manager's thread, still sending, is often preempted by it on the way. `Cork`
//! holds the head back until ureq transmits again and sends the two together; whatever ureq
//! does next, the held bytes go out before it waits for an answer.

use ureq::unversioned::transport::{Buffers, ConnectionDetails, Connector, NextTimeout, Transport};

/// A transmit this small, with nothing held, is held until the next transmit or the wait for
/// the answer: a request head (ours are about 200 bytes), or a short last chunk of a body.
/// Never while input is buffered: ureq then reads on without waiting (an answer that came with
/// a `100 Continue`), and the held bytes would stay behind.
const HOLD_AT_MOST: usize = 8 * 1024;

/// Wraps the transport of the connector it is chained after.
#[derive(Debug)]
pub struct Cork;

impl<In: Transport> Connector<In> for Cork {
    type Out = Corked<In>;

    fn connect(
        &self,
        _: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Corked<In>>, ureq::Error> {
        Ok(chained.map(|inner| Corked {
            inner,
            held: Vec::new(),
        }))
    }
}

#[derive(Debug)]
pub struct Corked<T> {
    inner: T,
    /// Bytes ureq asked to transmit that have not been sent yet.
    held: Vec<u8>,
}

impl<T: Transport> Corked<T> {
    /// Sends the held bytes on their own (through the output buffer, which holds nothing
    /// that is still to be sent when this is called).
    fn send_held(&mut self, timeout: NextTimeout) -> Result<(), ureq::Error> {
        let held = std::mem::take(&mut self.held);
        self.inner.buffers().output()[..held.len()].copy_from_slice(&held);
        self.inner.transmit_output(held.len(), timeout)
    }
}

impl<T: Transport> Transport for Corked<T> {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self.inner.buffers()
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if self.held.is_empty() && amount <= HOLD_AT_MOST && self.inner.buffers().input().is_empty()
        {
            self.held
                .extend_from_slice(&self.inner.buffers().output()[..amount]);
            return Ok(());
        }
        let held = self.held.len();
        if held == 0 {
            return self.inner.transmit_output(amount, timeout);
        }
        let output = self.inner.buffers().output();
        if held + amount <= output.len() {
            // The usual case: the head goes in front of the body, and both out at once.
            output.copy_within(..amount, held);
            output[..held].copy_from_slice(&self.held);
            self.held.clear();
            return self.inner.transmit_output(held + amount, timeout);
        }
        // A body chunk that (nearly) fills the buffer, in a large upload: the held bytes and
        // as much of the chunk as fits go now, and the chunk's last bytes (no more than were
        // held) are held in turn.
        let len = output.len();
        let keep = held + amount - len;
        let tail = output[amount - keep..amount].to_vec();
        output.copy_within(..amount - keep, held);
        output[..held].copy_from_slice(&self.held);
        self.held = tail;
        self.inner.transmit_output(len, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        if !self.held.is_empty() {
            self.send_held(timeout)?;
        }
        self.inner.await_input(timeout)
    }

    // A connection with bytes still held is mid-request: never reused as it is.
    fn is_open(&mut self) -> bool {
        self.held.is_empty() && self.inner.is_open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ureq::unversioned::transport::time::Duration;
    use ureq::unversioned::transport::LazyBuffers;
    use ureq::Timeout;

    /// Records what it is asked to send, one entry per send.
    #[derive(Debug)]
    struct Wire {
        buffers: LazyBuffers,
        sent: Vec<Vec<u8>>,
    }

    impl Transport for Wire {
        fn buffers(&mut self) -> &mut dyn Buffers {
            &mut self.buffers
        }
        fn transmit_output(&mut self, amount: usize, _: NextTimeout) -> Result<(), ureq::Error> {
            self.sent.push(self.buffers.output()[..amount].to_vec());
            Ok(())
        }
        fn await_input(&mut self, _: NextTimeout) -> Result<bool, ureq::Error> {
            Ok(true)
        }
        fn is_open(&mut self) -> bool {
            true
        }
    }

    fn corked(output: usize) -> Corked<Wire> {
        Corked {
            inner: Wire {
                buffers: LazyBuffers::new(1024, output),
                sent: Vec::new(),
            },
            held: Vec::new(),
        }
    }

    fn soon() -> NextTimeout {
        NextTimeout {
            after: Duration::from_secs(1),
            reason: Timeout::Global,
            per_read: None,
            per_write: None,
        }
    }

    /// What ureq does: puts `bytes` in the output buffer and transmits them.
    fn transmit(wire: &mut Corked<Wire>, bytes: &[u8]) {
        wire.buffers().output()[..bytes.len()].copy_from_slice(bytes);
        wire.transmit_output(bytes.len(), soon()).unwrap();
    }

    #[test]
    fn a_head_goes_out_with_the_body() {
        let mut wire = corked(64 * 1024);
        let body: Vec<u8> = (0..33_000u32).map(|i| i as u8).collect();
        transmit(&mut wire, b"POST /inference HTTP/1.1\r\n\r\n");
        assert!(wire.inner.sent.is_empty(), "the head is held");
        transmit(&mut wire, &body);
        wire.await_input(soon()).unwrap();
        let mut whole = b"POST /inference HTTP/1.1\r\n\r\n".to_vec();
        whole.extend_from_slice(&body);
        assert_eq!(wire.inner.sent, [whole], "one send, head first");
    }

    #[test]
    fn a_head_alone_goes_out_before_the_answer_is_awaited() {
        let mut wire = corked(4096);
        transmit(&mut wire, b"GET /health HTTP/1.1\r\n\r\n");
        wire.await_input(soon()).unwrap();
        assert_eq!(wire.inner.sent, [b"GET /health HTTP/1.1\r\n\r\n".to_vec()]);
        // The next request on the connection is held afresh.
        transmit(&mut wire, b"GET /health HTTP/1.1\r\n\r\n");
        assert!(!wire.is_open(), "not reusable with bytes held");
        wire.await_input(soon()).unwrap();
        assert_eq!(wire.inner.sent.len(), 2);
        assert!(wire.is_open());
    }

    #[test]
    fn chunks_that_fill_the_buffer_carry_the_head_in_front() {
        let head = b"POST /inference HTTP/1.1\r\n\r\n";
        let mut wire = corked(16 * 1024);
        let full: Vec<u8> = (0..16 * 1024u32).map(|i| (i * 7) as u8).collect();
        transmit(&mut wire, head);
        transmit(&mut wire, &full);
        transmit(&mut wire, &full);
        transmit(&mut wire, b"the rest");
        wire.await_input(soon()).unwrap();
        let mut whole = head.to_vec();
        whole.extend_from_slice(&full);
        whole.extend_from_slice(&full);
        whole.extend_from_slice(b"the rest");
        let sizes: Vec<usize> = wire.inner.sent.iter().map(Vec::len).collect();
        assert_eq!(sizes, [16 * 1024, 16 * 1024, head.len() + 8], "full sends");
        assert_eq!(wire.inner.sent.concat(), whole, "the same bytes in order");
    }

    /// Records the size of each send of the transport it wraps.
    #[derive(Debug, Clone, Default)]
    struct Record(std::sync::Arc<std::sync::Mutex<Vec<usize>>>);

    #[derive(Debug)]
    struct Recorded<T>(T, Record);

    impl<In: Transport> Connector<In> for Record {
        type Out = Recorded<In>;
        fn connect(
            &self,
            _: &ConnectionDetails,
            chained: Option<In>,
        ) -> Result<Option<Recorded<In>>, ureq::Error> {
            Ok(chained.map(|inner| Recorded(inner, self.clone())))
        }
    }

    impl<T: Transport> Transport for Recorded<T> {
        fn buffers(&mut self) -> &mut dyn Buffers {
            self.0.buffers()
        }
        fn transmit_output(&mut self, amount: usize, t: NextTimeout) -> Result<(), ureq::Error> {
            self.1 .0.lock().unwrap().push(amount);
            self.0.transmit_output(amount, t)
        }
        fn await_input(&mut self, t: NextTimeout) -> Result<bool, ureq::Error> {
            self.0.await_input(t)
        }
        fn is_open(&mut self) -> bool {
            self.0.is_open()
        }
    }

    /// Answers `200 ok` to each request on one connection until it closes.
    fn serve_one_connection(listener: std::net::TcpListener) {
        use std::io::{BufRead, BufReader, Read, Write};
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        loop {
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if let Some(n) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = n.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            (&stream)
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
        }
    }

    #[test]
    fn through_ureq_a_request_is_one_send_whatever_its_body() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/inference", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || serve_one_connection(listener));
        let record = Record::default();
        let agent = ureq::Agent::with_parts(
            ureq::Agent::config_builder().build(),
            ureq::unversioned::transport::DefaultConnector::default()
                .chain(record.clone())
                .chain(Cork),
            ureq::unversioned::resolver::DefaultResolver::default(),
        );
        for body in [vec![7u8; 33_000], Vec::new(), vec![9u8; 200_000]] {
            let mut response = agent.post(&url).send(&body[..]).unwrap();
            assert_eq!(response.body_mut().read_to_string().unwrap(), "ok");
        }
        agent.get(&url).call().unwrap();
        drop(agent);
        server.join().unwrap();
        let sizes = record.0.lock().unwrap().clone();
        // One send a request, the head with its body: 33 KB, none, and the 200 KB one in a
        // full 128 KiB send and the rest; then the GET.
        let head = |n: usize| (80..200).contains(&n);
        assert_eq!(sizes.len(), 5, "{sizes:?}");
        assert!(head(sizes[0] - 33_000), "{sizes:?}");
        assert!(head(sizes[1]), "{sizes:?}");
        assert_eq!(sizes[2], 128 * 1024, "{sizes:?}");
        assert!(head(sizes[2] + sizes[3] - 200_000), "{sizes:?}");
        assert!(head(sizes[4]), "{sizes:?}");
    }

    #[test]
    fn nothing_is_held_while_input_waits_to_be_read() {
        let mut wire = corked(4096);
        wire.buffers().input_append_buf()[..4].copy_from_slice(b"HTTP");
        wire.buffers().input_appended(4);
        transmit(&mut wire, b"body");
        assert_eq!(wire.inner.sent, [b"body".to_vec()]);
    }
}
