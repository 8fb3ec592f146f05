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
        if self.held.is_empty() && amount <= HOLD_AT_MOST {
            self.held
                .extend_from_slice(&self.inner.buffers().output()[..amount]);
            return Ok(());
        }
        let held = self.held.len();
        let output = self.inner.buffers().output();
        if held + amount <= output.len() {
            // The usual case: the head goes in front of the body, and both out at once.
            output.copy_within(..amount, held);
            output[..held].copy_from_slice(&self.held);
            self.held.clear();
            return self.inner.transmit_output(held + amount, timeout);
        }
        // A body chunk that fills the buffer (a large upload): the head goes first, alone.
        let chunk = output[..amount].to_vec();
        self.send_held(timeout)?;
        self.inner.buffers().output()[..amount].copy_from_slice(&chunk);
        self.inner.transmit_output(amount, timeout)
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        if !self.held.is_empty() {
            self.send_held(timeout)?;
        }
        self.inner.await_input(timeout)
    }

    // ureq may look for input this way too; held bytes go out first either way.
    fn maybe_await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        if !self.held.is_empty() {
            self.send_held(timeout)?;
        }
        self.inner.maybe_await_input(timeout)
    }

    fn is_open(&mut self) -> bool {
        self.inner.is_open()
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
        wire.maybe_await_input(soon()).unwrap();
        assert_eq!(wire.inner.sent.len(), 2);
    }

    #[test]
    fn a_chunk_that_fills_the_buffer_follows_the_head_unchanged() {
        let mut wire = corked(16 * 1024);
        let full: Vec<u8> = (0..16 * 1024u32).map(|i| (i * 7) as u8).collect();
        transmit(&mut wire, b"POST /inference HTTP/1.1\r\n\r\n");
        transmit(&mut wire, &full);
        transmit(&mut wire, b"the rest");
        wire.await_input(soon()).unwrap();
        assert_eq!(
            wire.inner.sent,
            [
                b"POST /inference HTTP/1.1\r\n\r\n".to_vec(),
                full,
                b"the rest".to_vec()
            ]
        );
    }
}
