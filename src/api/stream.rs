//! Server-sent events for `stream: true` (`/api/v1/transcriptions`) and `stream=true`
//! (`/v1/audio/transcriptions`): the transcript as it is made, chunk by chunk, in order.
//!
//! The transcription runs on a thread of its own and sends its events down a channel; the
//! response body reads the channel, so the request thread writes each event as it comes (the
//! patched tiny_http sends every read as a chunk). Whatever fails before the transcription has
//! begun (bad audio, an unknown model, a full queue) is answered as a normal error with its
//! status code; a failure after that is an `error` event, and the stream ends.
//!
//! Two shapes:
//! - OpenAI's: `data: {"type":"transcript.text.delta","delta":...}` per chunk, then
//!   `data: {"type":"transcript.text.done","text":...}`; an error is `data: {"error":{...}}`,
//!   which the SDKs raise as an `APIError`.
//! - The service's: `event: begin` (`chunksTotal`, `duration`), `event: segment` per segment
//!   (`start`, `end`, `text`, `confidence`, `chunksDone`, `chunksTotal`), then `event: result`
//!   with the body the same request without `stream` answers; an error is `event: error` with
//!   the usual error body.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};

use serde_json::{json, Value};

use crate::engine::inference::Event;
use crate::error::ApiError;
use crate::http::Reply;

/// The content type of server-sent events.
const EVENT_STREAM: &str = "text/event-stream; charset=utf-8";

/// Which event shape a stream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    OpenAi,
    Seed,
}

/// What the transcription thread sends: encoded events, or a failure.
enum Message {
    Events(String),
    Failed(ApiError),
}

/// Starts `run` on a thread of its own and answers with its events. `run` gets the sink for
/// the engine's progress and returns the final event's JSON (OpenAI's `done` event, or the
/// service's `result` body).
pub fn start(
    shape: Shape,
    run: impl FnOnce(&(dyn Fn(Event) -> bool + Sync)) -> Result<Value, ApiError> + Send + 'static,
) -> Result<Reply, ApiError> {
    let (tx, rx) = channel::<Message>();
    std::thread::Builder::new()
        .name("stream".into())
        .spawn(move || {
            // A client that left closed the channel: the engine hears it and runs no more chunks.
            let encoder = Encoder::new(shape);
            let sink = |event: Event| tx.send(Message::Events(encoder.encode(&event))).is_ok();
            let last = match run(&sink) {
                Ok(done) => Message::Events(finish(shape, &done)),
                Err(e) => Message::Failed(e),
            };
            let _ = tx.send(last);
        })
        .map_err(|e| ApiError::Internal(format!("cannot start a stream: {e}")))?;
    match rx.recv() {
        Ok(Message::Failed(e)) => Err(e),
        Ok(Message::Events(first)) => Ok(Reply::stream(
            EVENT_STREAM,
            Box::new(Events {
                shape,
                rx,
                pending: first.into_bytes(),
                at: 0,
            }),
        )),
        Err(_) => Err(ApiError::Internal(
            "the stream ended before it began".into(),
        )),
    }
}

/// The body of a streamed reply: the channel's events, in order, until the thread is done.
struct Events {
    shape: Shape,
    rx: Receiver<Message>,
    pending: Vec<u8>,
    at: usize,
}

impl Read for Events {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.pending.len() {
            let next = match self.rx.recv() {
                Ok(Message::Events(text)) => text,
                Ok(Message::Failed(e)) => failure(self.shape, &e),
                Err(_) => return Ok(0),
            };
            self.pending = next.into_bytes();
            self.at = 0;
        }
        let n = buf.len().min(self.pending.len() - self.at);
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Turns a run's engine events, which come in order, into server-sent events.
struct Encoder {
    shape: Shape,
    /// Whether a delta with text has gone out: the next one starts with the space that joins
    /// it to the text before, as the whole text joins its chunks. (Not the chunk count: chunks
    /// finish out of order, so the first one reported may come with two done; and a silent
    /// chunk adds no text.)
    text_sent: AtomicBool,
}

impl Encoder {
    fn new(shape: Shape) -> Encoder {
        Encoder {
            shape,
            text_sent: AtomicBool::new(false),
        }
    }

    /// One engine event as server-sent events.
    fn encode(&self, event: &Event) -> String {
        match (self.shape, event) {
            (Shape::OpenAi, Event::Began { .. }) => ": transcription begun\n\n".into(),
            (
                Shape::Seed,
                Event::Began {
                    chunks_total,
                    seconds,
                },
            ) => sse(
                Some("begin"),
                &json!({ "chunksTotal": chunks_total, "duration": seconds }),
            ),
            (Shape::OpenAi, Event::Chunk(p)) => {
                let text = &p.transcript.text;
                let joined = !text.is_empty() && self.text_sent.swap(true, Ordering::Relaxed);
                let delta = if joined {
                    format!(" {text}")
                } else {
                    text.clone()
                };
                sse(
                    None,
                    &json!({ "type": "transcript.text.delta", "delta": delta,
                             "chunksDone": p.chunks_done, "chunksTotal": p.chunks_total }),
                )
            }
            (Shape::Seed, Event::Chunk(p)) => p
                .transcript
                .segments
                .iter()
                .map(|s| {
                    sse(
                        Some("segment"),
                        &json!({ "start": s.start, "end": s.end, "text": s.text(),
                                 "confidence": s.confidence(),
                                 "chunksDone": p.chunks_done, "chunksTotal": p.chunks_total }),
                    )
                })
                .collect(),
        }
    }
}

/// The last event of a stream that succeeded.
fn finish(shape: Shape, done: &Value) -> String {
    match shape {
        Shape::OpenAi => sse(None, done),
        Shape::Seed => sse(Some("result"), done),
    }
}

/// The last event of a stream that failed after it began.
fn failure(shape: Shape, e: &ApiError) -> String {
    match shape {
        Shape::OpenAi => sse(None, &e.openai_body()),
        Shape::Seed => sse(Some("error"), &e.body()),
    }
}

fn sse(event: Option<&str>, data: &Value) -> String {
    match event {
        Some(name) => format!("event: {name}\ndata: {data}\n\n"),
        None => format!("data: {data}\n\n"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::inference::Progressed;
    use crate::engine::transcript::Transcript;

    fn chunk(text: &str) -> Transcript {
        crate::engine::transcript::tests::read(
            &json!({ "segments": [{ "id": 0, "text": format!(" {text}"), "start": 1.0, "end": 2.0, "avg_logprob": -0.1 }] }),
            None,
            None,
        )
    }

    #[test]
    fn openai_deltas_concatenate_into_the_text() {
        let delta = |s: &str| -> String {
            let v: Value = serde_json::from_str(s.trim().strip_prefix("data: ").unwrap()).unwrap();
            v["delta"].as_str().unwrap().to_string()
        };
        let progressed = |transcript, chunks_done| {
            Event::Chunk(Progressed {
                transcript,
                chunks_done,
                chunks_total: 4,
            })
        };
        // Chunk 2 finished before chunk 1, so both are reported with 2 done; chunk 3 is
        // silent.
        let (a, b, silent, d) = (chunk("And so"), chunk("my fellow"), chunk(""), chunk("ask"));
        let parts = [(&a, 2), (&b, 2), (&silent, 3), (&d, 4)];
        let encoder = Encoder::new(Shape::OpenAi);
        let events: Vec<String> = parts
            .iter()
            .map(|(t, done)| encoder.encode(&progressed(t, *done)))
            .collect();
        let whole = Transcript::merge(vec![a.clone(), b.clone(), silent.clone(), d.clone()], 4.0);
        assert_eq!(
            events.iter().map(|e| delta(e)).collect::<String>(),
            whole.text
        );
        assert_eq!(whole.text, "And so my fellow ask");
        assert!(events[0].contains("\"type\":\"transcript.text.delta\""));
    }

    #[test]
    fn seed_events_name_themselves() {
        let a = chunk("hello");
        let segment = Encoder::new(Shape::Seed).encode(&Event::Chunk(Progressed {
            transcript: &a,
            chunks_done: 1,
            chunks_total: 3,
        }));
        assert!(segment.starts_with("event: segment\ndata: {"), "{segment}");
        assert!(segment.contains("\"text\":\"hello\"") && segment.contains("\"chunksTotal\":3"));
        let error = failure(Shape::Seed, &ApiError::Timeout("x".into()));
        assert!(error.starts_with("event: error\ndata: {") && error.contains("TIMEOUT"));
        let openai_error = failure(Shape::OpenAi, &ApiError::Timeout("x".into()));
        assert!(
            openai_error.starts_with("data: {\"error\":"),
            "{openai_error}"
        );
    }

    #[test]
    fn the_body_reads_every_event_then_ends() {
        let reply = start(Shape::Seed, |sink| {
            sink(Event::Began {
                chunks_total: 1,
                seconds: Some(1.0),
            });
            let t = chunk("hi");
            sink(Event::Chunk(Progressed {
                transcript: &t,
                chunks_done: 1,
                chunks_total: 1,
            }));
            Ok(json!({ "success": true }))
        })
        .unwrap();
        let mut body = String::new();
        reply.stream.unwrap().0.read_to_string(&mut body).unwrap();
        let events: Vec<&str> = body
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(events, ["begin", "segment", "result"]);
        assert!(matches!(
            start(Shape::Seed, |_| Err(ApiError::Timeout("before".into()))),
            Err(ApiError::Timeout(_))
        ));
    }

    #[test]
    fn a_failure_after_the_stream_began_is_its_last_event() {
        let reply = start(Shape::OpenAi, |sink| {
            sink(Event::Began {
                chunks_total: 2,
                seconds: None,
            });
            Err(ApiError::WorkerError("two workers failed in a row".into()))
        })
        .unwrap();
        let mut body = String::new();
        reply.stream.unwrap().0.read_to_string(&mut body).unwrap();
        let last = body.trim_end().rsplit("\n\n").next().unwrap();
        let data: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(data["error"]["code"], "worker_error", "{body}");
    }
}
