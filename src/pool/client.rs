//! The HTTP client side of the whisper-server protocol: `GET /health` and a multipart
//! `POST /inference`, over loopback with `ureq`.
//!
//! Connections to workers are kept alive and reused: a new loopback connection per request
//! costs both sides (and a thread in the worker) more than the request itself when the answer
//! is quick. A pooled socket may be stale (its worker replaced on the same port, or closed by
//! whisper-server's keep-alive timeout): ureq probes each one before reuse and drops those
//! the peer closed, `IDLE_REUSE` stays under whisper-server's 5 s keep-alive timeout, and
//! `dispatch` tells the rare stale socket from a dead worker by asking `/health`. The socket
//! is our own (`tcp`: the probe and the timeouts cost fewer system calls than ureq's), and a
//! request's head goes out in one write with its body (`cork`).

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use ureq::unversioned::resolver::{ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{Connector, NextTimeout};

use super::cork::Cork;
use super::tcp::Tcp;

/// A pooled connection idle longer than this is not reused: whisper-server (cpp-httplib)
/// closes keep-alive connections after 5 s idle.
const IDLE_REUSE: Duration = Duration::from_secs(2);

/// Idle connections kept in all: a few per worker of a large pool.
const MAX_IDLE: usize = 64;

/// Largest worker answer we accept: a transcript of hours of audio with word timestamps stays
/// far below this; anything bigger is a broken worker, not a transcript.
const MAX_REPLY_BYTES: u64 = 64 * 1024 * 1024;

/// whisper-server's `POST /inference` form, encoded once as `multipart/form-data` (RFC 7578),
/// the file part first. The audio is written straight into the body that is sent, and a
/// retry sends the same bytes.
#[derive(Debug, Clone)]
pub struct InferenceForm {
    body: Vec<u8>,
    boundary: String,
}

impl InferenceForm {
    /// The form of a file `audio_len` bytes long, which `write_audio` appends to the body
    /// (again, in the rare case its bytes hold the boundary), and of `fields`, in order, as
    /// whisper-server names them (`response_format`, `language`, ...). Values are checked
    /// before they get here: whisper-server answers a malformed number with a 500.
    pub fn new(
        file_name: &str,
        fields: &[(&'static str, String)],
        audio_len: usize,
        write_audio: impl Fn(&mut Vec<u8>),
    ) -> InferenceForm {
        // The usual fixed prefix plus a counter bumped until the boundary is absent from the
        // audio (in practice the first try).
        (0u32..)
            .find_map(|n| {
                let boundary = format!("----inference-server-manager-{n:08x}");
                let mut body = Vec::with_capacity(audio_len + 256 + 64 * fields.len());
                write_file_head(&mut body, &boundary, file_name);
                let audio_starts = body.len();
                write_audio(&mut body);
                let clash =
                    crate::http::multipart::find(&body[audio_starts..], boundary.as_bytes());
                clash.is_none().then(|| {
                    write_fields(&mut body, &boundary, fields);
                    InferenceForm { body, boundary }
                })
            })
            .expect("some boundary is absent")
    }

    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// What the worker answered, whatever the status.
#[derive(Debug, Clone)]
pub struct WorkerReply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// Why no answer came back.
#[derive(Debug)]
pub enum CallError {
    /// Nothing answered on the port, or the connection broke: the process is likely gone.
    Connection(ureq::Error),
    /// The deadline passed first.
    Timeout,
    /// It answered, but not with a 2xx (only from `health`).
    Status(u16),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Connection(e) => write!(f, "{e}"),
            CallError::Timeout => f.write_str("no answer within the deadline"),
            CallError::Status(status) => write!(f, "answered {status}"),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Connection(e) => Some(e),
            CallError::Timeout | CallError::Status(_) => None,
        }
    }
}

/// The agent for `/inference`, with ureq's default 128 KiB buffers per connection.
fn agent() -> &'static ureq::Agent {
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| new_agent(ureq::Agent::config_builder()))
}

/// The agent for `/health`, with connections of its own. Probes come every
/// `healthIntervalMs` (5 s by default, longer than `IDLE_REUSE`), so each opens a connection,
/// and ureq's default buffers (128 KiB each way, zeroed) were a third of what an idle service
/// spent. The answer is a line of JSON.
fn health_agent() -> &'static ureq::Agent {
    const HEALTH_BUFFER: usize = 4096;
    static AGENT: OnceLock<ureq::Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        new_agent(
            ureq::Agent::config_builder()
                .input_buffer_size(HEALTH_BUFFER)
                .output_buffer_size(HEALTH_BUFFER)
                .max_response_header_size(HEALTH_BUFFER),
        )
    })
}

fn new_agent(config: ureq::config::ConfigBuilder<ureq::typestate::AgentScope>) -> ureq::Agent {
    let config = config
        // Workers are on loopback: never through a proxy from HTTP_PROXY or ALL_PROXY (`Tcp`
        // connects to the worker's own address).
        .proxy(None)
        .http_status_as_error(false)
        .max_idle_age(IDLE_REUSE)
        .max_idle_connections(MAX_IDLE)
        .build();
    ureq::Agent::with_parts(config, Tcp.chain(Cork), IpLiteral)
}

/// Workers are called at `127.0.0.1`: the address is in the URL, and nothing is looked up.
/// ureq's own resolver runs every lookup under a deadline on a thread of its own, so with a
/// timeout set (always, here) each worker call spawned a thread, even for an IP address and
/// a pooled connection.
#[derive(Debug)]
struct IpLiteral;

impl Resolver for IpLiteral {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        _: &ureq::config::Config,
        _: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let ip = uri.host().and_then(|host| host.parse::<IpAddr>().ok());
        let (Some(ip), Some(port)) = (ip, uri.port_u16()) else {
            return Err(ureq::Error::HostNotFound);
        };
        let mut addresses = self.empty();
        addresses.push(SocketAddr::new(ip, port));
        Ok(addresses)
    }
}

fn classify(error: ureq::Error) -> CallError {
    match error {
        ureq::Error::Timeout(_) => CallError::Timeout,
        ureq::Error::Io(e)
            if e.kind() == std::io::ErrorKind::TimedOut
                || e.kind() == std::io::ErrorKind::WouldBlock =>
        {
            CallError::Timeout
        }
        other => CallError::Connection(other),
    }
}

/// `GET /health` within `timeout`; `Ok` only for a 2xx.
pub fn health(port: u16, timeout: Duration) -> Result<(), CallError> {
    let response = health_agent()
        .get(format!("http://127.0.0.1:{port}/health"))
        .config()
        .timeout_global(Some(timeout))
        .build()
        .call()
        .map_err(classify)?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(CallError::Status(status))
    }
}

/// `POST /inference` with `form`, giving up after `timeout`. A closed connection makes
/// whisper-server abort the inference, so timing out also frees the worker's CPU.
pub fn inference(
    port: u16,
    form: &InferenceForm,
    timeout: Duration,
) -> Result<WorkerReply, CallError> {
    let mut response = agent()
        .post(format!("http://127.0.0.1:{port}/inference"))
        .config()
        .timeout_global(Some(timeout))
        .build()
        .header("Content-Type", form.content_type())
        .send(form.body())
        .map_err(classify)?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let mut body = Vec::new();
    response
        .body_mut()
        .as_reader()
        .take(MAX_REPLY_BYTES)
        .read_to_end(&mut body)
        .map_err(|e| classify(ureq::Error::Io(e)))?;
    Ok(WorkerReply {
        status,
        content_type,
        body,
    })
}

/// The opening boundary and the headers of the file part.
fn write_file_head(body: &mut Vec<u8>, boundary: &str, file_name: &str) {
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n",
            file_name.replace(['"', '\r', '\n'], "_")
        )
        .as_bytes(),
    );
}

/// The end of the file part, the text fields and the closing boundary.
fn write_fields(body: &mut Vec<u8>, boundary: &str, fields: &[(&'static str, String)]) {
    body.extend_from_slice(b"\r\n");
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").as_bytes(),
        );
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_round_trips_through_the_parser() {
        let audio = b"RIFF\x00\x01binary\r\n--not-a-boundary".to_vec();
        let fields = [
            ("response_format", "verbose_json".into()),
            ("language", "en".into()),
            ("temperature", "0.2".into()),
        ];
        let form = InferenceForm::new("a\"b.wav", &fields, audio.len(), |body| {
            body.extend_from_slice(&audio)
        });
        let boundary = form
            .content_type()
            .split_once("boundary=")
            .unwrap()
            .1
            .to_string();
        let parts = crate::http::multipart::parse(form.body(), &boundary).unwrap();
        let file = parts.iter().find(|p| p.name == "file").unwrap();
        assert_eq!(file.data, audio);
        assert_eq!(file.file_name.as_deref(), Some("a_b.wav"));
        let text = |n: &str| {
            parts
                .iter()
                .find(|p| p.name == n)
                .map(|p| String::from_utf8_lossy(&p.data).into_owned())
        };
        assert_eq!(text("response_format").as_deref(), Some("verbose_json"));
        assert_eq!(text("language").as_deref(), Some("en"));
        assert_eq!(text("temperature").as_deref(), Some("0.2"));
        assert_eq!(text("prompt"), None);
    }

    #[test]
    fn worker_addresses_are_taken_from_the_url() {
        let resolve = |url: &str| {
            let uri: ureq::http::Uri = url.parse().unwrap();
            let config = ureq::config::Config::default();
            IpLiteral.resolve(&uri, &config, NextTimeout::default())
        };
        let addresses = resolve("http://127.0.0.1:39000/inference").unwrap();
        assert_eq!(addresses.len(), 1);
        assert_eq!(addresses[0], SocketAddr::from(([127, 0, 0, 1], 39000)));
        assert!(resolve("http://localhost:39000/").is_err());
    }

    #[test]
    fn boundary_avoids_the_payload() {
        let audio = b"xx----inference-server-manager-00000000yy".to_vec();
        let form = InferenceForm::new("a.wav", &[], audio.len(), |body| {
            body.extend_from_slice(&audio)
        });
        assert_eq!(
            form.content_type(),
            "multipart/form-data; boundary=----inference-server-manager-00000001"
        );
    }
}
