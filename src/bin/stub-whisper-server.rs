//! `stub-whisper-server`: speaks whisper.cpp's `whisper-server` protocol without a model, so the
//! manager can be tried and tested on any machine.
//!
//! Like the real server it takes `--host`, `--port`, `-m/--model` and `-t/--threads`, answers
//! `GET /health`, `POST /inference` (multipart, all five `response_format`s, one inference at a
//! time) and `POST /load`, and replies to bad requests with a plain-text 400. The transcript is
//! `--text` or, by default, a fingerprint of the audio (`stub <bytes> bytes <hash>`, after
//! `[<model file>] ` when started with `-m`), so a test can tell that each answer belongs to
//! its request and which model served it.
//!
//! `verbose_json` is shaped as whisper-server v1.8.5 shapes it: segments of three words, each
//! with its tokens (`words`: `" word"` with times and a probability), `language` by name.
//! `translate=true` answers `task: translate` and prefixes the text with `english:`;
//! `detect_language=true` answers no segments and the `--detect` language (default `english`)
//! with its probability. A model whose file name has `.en` ignores both, as whisper-server
//! does. Every inference logs its fields (`inference 3: 1234 bytes, fields a=b c=d`), so a
//! test can check what the manager asked for.
//!
//! Knobs for failure tests:
//!   --load-ms N          `/health` answers 503 for N ms after start (a model still loading)
//!   --delay-ms N         each inference takes N ms
//!   --crash-after N      the process exits (code 3) on receiving its N-th inference
//!   --hang               inferences never finish while `/health` stays fine
//!   --unhealthy-after-ms N  `/health` answers 500 from N ms after start on
//!   --exit-immediately   exit with code 1 at start (a crash loop)
//!   --fail-if-exists P   exit with code 1 at start while file P exists
//!   --detect NAME        the language `detect_language` finds (whisper's name, e.g. `german`)
//!   --words-from-pcm     transcribe what the audio holds, not a fingerprint: in a 16-bit WAV,
//!                        each burst of sound (samples over 100, separated by 0.1 s of
//!                        quieter ones) is the word `w<peak>`, `<peak>` its largest |sample|,
//!                        with its times; so a test that writes bursts of known peaks can check
//!                        exactly which audio reached which worker, in what order and where

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use inference_server_manager::audio;
use inference_server_manager::http::multipart;
use tiny_http::{Header, Method, Response, Server};

/// Threads answering HTTP: enough that `/health` is served while an inference runs.
const HTTP_THREADS: usize = 4;

#[derive(Debug, Default)]
struct Options {
    host: String,
    port: u16,
    model: String,
    text: Option<String>,
    load: Duration,
    delay: Duration,
    crash_after: Option<u64>,
    hang: bool,
    unhealthy_after: Option<Duration>,
    detect: Option<String>,
    words_from_pcm: bool,
}

fn main() {
    let options = match parse_args(std::env::args().skip(1).collect()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("stub-whisper-server: {message}");
            std::process::exit(2);
        }
    };
    let server = match Server::http((options.host.as_str(), options.port)) {
        Ok(server) => Arc::new(server),
        Err(e) => {
            eprintln!(
                "stub-whisper-server: cannot listen on {}:{}: {e}",
                options.host, options.port
            );
            std::process::exit(1);
        }
    };
    println!(
        "stub-whisper-server listening on http://{}:{} (model: {})",
        options.host, options.port, options.model
    );
    let stub = Arc::new(Stub {
        options,
        started: Instant::now(),
        inferences: AtomicU64::new(0),
        busy: Mutex::new(()),
    });
    let threads: Vec<_> = (0..HTTP_THREADS)
        .map(|_| {
            let (server, stub) = (Arc::clone(&server), Arc::clone(&stub));
            std::thread::spawn(move || {
                for request in server.incoming_requests() {
                    stub.handle(request);
                }
            })
        })
        .collect();
    for thread in threads {
        let _ = thread.join();
    }
}

fn parse_args(args: Vec<String>) -> Result<Options, String> {
    let mut options = Options {
        host: "127.0.0.1".into(),
        port: 8080,
        ..Options::default()
    };
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let mut value = || iter.next().ok_or_else(|| format!("{arg} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("`{v}` is not a number"))
        };
        match arg.as_str() {
            "--host" => options.host = value()?,
            "--port" => options.port = value()?.parse().map_err(|_| "bad --port".to_string())?,
            "-m" | "--model" => options.model = value()?,
            "-t" | "--threads" => drop(value()?),
            "--text" => options.text = Some(value()?),
            "--load-ms" => options.load = Duration::from_millis(number(value()?)?),
            "--delay-ms" => options.delay = Duration::from_millis(number(value()?)?),
            "--crash-after" => options.crash_after = Some(number(value()?)?),
            "--hang" => options.hang = true,
            "--detect" => options.detect = Some(value()?),
            "--words-from-pcm" => options.words_from_pcm = true,
            "--unhealthy-after-ms" => {
                options.unhealthy_after = Some(Duration::from_millis(number(value()?)?))
            }
            "--exit-immediately" => {
                eprintln!("stub-whisper-server: exiting at once as asked");
                std::process::exit(1);
            }
            "--fail-if-exists" => {
                let path = value()?;
                if std::path::Path::new(&path).exists() {
                    eprintln!("stub-whisper-server: {path} exists; failing to start as asked");
                    std::process::exit(1);
                }
            }
            other => eprintln!("stub-whisper-server: ignoring unknown argument {other}"),
        }
    }
    Ok(options)
}

struct Stub {
    options: Options,
    started: Instant,
    inferences: AtomicU64,
    /// whisper-server runs one inference at a time per process.
    busy: Mutex<()>,
}

type Reply = (u16, &'static str, Vec<u8>);

impl Stub {
    fn handle(&self, mut request: tiny_http::Request) {
        let (status, content_type, body) = match (request.method(), request.url()) {
            (Method::Get, "/health") => self.health(),
            (Method::Post, "/inference") => self.inference(&mut request),
            (Method::Post, "/load") => load(&mut request),
            _ => (404, "text/plain", b"Not Found".to_vec()),
        };
        let header = Header::from_bytes("Content-Type", content_type).expect("static header");
        let _ = request.respond(
            Response::from_data(body)
                .with_status_code(status)
                .with_header(header),
        );
    }

    fn health(&self) -> Reply {
        let age = self.started.elapsed();
        if age < self.options.load {
            return (
                503,
                "application/json",
                br#"{"status":"loading model"}"#.to_vec(),
            );
        }
        if self
            .options
            .unhealthy_after
            .is_some_and(|after| age >= after)
        {
            return (500, "text/plain", b"Internal Server Error".to_vec());
        }
        (200, "application/json", br#"{"status":"ok"}"#.to_vec())
    }

    fn inference(&self, request: &mut tiny_http::Request) -> Reply {
        let n = self.inferences.fetch_add(1, Ordering::SeqCst) + 1;
        if self.options.crash_after.is_some_and(|limit| n >= limit) {
            eprintln!("stub-whisper-server: crashing on inference {n} as asked");
            std::process::exit(3);
        }
        let Some((audio, fields)) = read_form(request) else {
            return (400, "text/plain", b"Invalid request".to_vec());
        };
        let _one_at_a_time = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if self.options.hang {
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        std::thread::sleep(self.options.delay);
        let text = self
            .options
            .text
            .clone()
            .unwrap_or_else(|| fingerprint(&audio, &self.options.model));
        let duration = audio::wav_duration_secs(&audio).unwrap_or(audio.len() as f64 / 32_000.0);
        if self.options.words_from_pcm {
            let words = pcm_words(&audio);
            println!(
                "inference {n}: {duration:.3} s, words {}",
                words
                    .iter()
                    .map(|w| w.0.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            return json_reply(words_json(&words, duration));
        }
        let field = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let flag = |name: &str| field(name) == Some("true");
        let listed: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "inference {n}: {} bytes, fields {}",
            audio.len(),
            listed.join(" ")
        );
        // whisper-server: an English-only model ignores the language and translation.
        let english_only = self.options.model.contains(".en");
        let language = match field("language") {
            Some(code) if !english_only && code != "auto" => language_name(code),
            _ => "english",
        };
        let format = field("response_format").unwrap_or("json");
        if flag("detect_language") && format == "verbose_json" {
            let detected = self.options.detect.as_deref().unwrap_or("english");
            return json_reply(serde_json::json!({
                "task": "transcribe", "language": detected, "duration": duration, "text": "",
                "segments": [], "detected_language": detected,
                "detected_language_probability": 0.875,
            }));
        }
        let translate = flag("translate") && !english_only;
        let text = if translate {
            format!("english: {text}")
        } else {
            text
        };
        format_reply(format, &text, language, duration, translate)
    }
}

/// A 16-bit WAV's samples (the data chunk), or none.
fn pcm_samples(wav: &[u8]) -> Vec<i16> {
    let Some(at) = wav.windows(4).position(|w| w == b"data") else {
        return Vec::new();
    };
    wav.get(at + 8..)
        .unwrap_or_default()
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

/// The bursts of sound in `wav`, as (`w<peak>`, start s, end s).
fn pcm_words(wav: &[u8]) -> Vec<(String, f64, f64)> {
    const LOUD: i16 = 100;
    const GAP: usize = 1600; // 0.1 s at 16 kHz
    let samples = pcm_samples(wav);
    let mut words = Vec::new();
    let mut burst: Option<(usize, usize, i16)> = None; // start, last loud, peak
    for (i, s) in samples.iter().enumerate() {
        let level = s.saturating_abs();
        burst = match burst {
            Some((start, _, peak)) if level > LOUD => Some((start, i, peak.max(level))),
            Some((start, last, peak)) if i - last > GAP => {
                words.push((
                    format!("w{peak}"),
                    start as f64 / 16_000.0,
                    (last + 1) as f64 / 16_000.0,
                ));
                None
            }
            None if level > LOUD => Some((i, i, level)),
            other => other,
        };
    }
    if let Some((start, last, peak)) = burst {
        words.push((
            format!("w{peak}"),
            start as f64 / 16_000.0,
            (last + 1) as f64 / 16_000.0,
        ));
    }
    words
}

/// `verbose_json` with one segment per word found in the PCM.
fn words_json(words: &[(String, f64, f64)], duration: f64) -> serde_json::Value {
    let segments: Vec<serde_json::Value> = words
        .iter()
        .enumerate()
        .map(|(i, (word, start, end))| {
            serde_json::json!({
                "id": i, "text": format!(" {word}"), "start": start, "end": end, "tokens": [i],
                "words": [{ "word": format!(" {word}"), "start": start, "end": end, "probability": 0.9 }],
                "temperature": 0.0, "avg_logprob": -0.1, "no_speech_prob": 0.0,
            })
        })
        .collect();
    let text: String = words.iter().map(|(w, _, _)| format!(" {w}\n")).collect();
    serde_json::json!({ "task": "transcribe", "language": "english", "duration": duration, "text": text, "segments": segments })
}

/// whisper's name for the few codes the tests use; whisper-server reports names, not codes.
fn language_name(code: &str) -> &'static str {
    match code {
        "de" => "german",
        "fr" => "french",
        "es" => "spanish",
        _ => "english",
    }
}

/// The non-file fields of a form, as (name, value).
type Fields = Vec<(String, String)>;

/// The `file` part and the other fields; `None` for anything whisper-server would refuse.
fn read_form(request: &mut tiny_http::Request) -> Option<(Vec<u8>, Fields)> {
    let content_type = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_string())?;
    let boundary = multipart::boundary_of(&content_type)?;
    let parts = multipart::read_form(request.as_reader(), &boundary).ok()?;
    let audio = parts.iter().find(|p| p.name == "file")?.data.clone();
    if audio.is_empty() {
        return None;
    }
    let fields = parts
        .into_iter()
        .filter(|p| p.name != "file")
        .map(|p| (p.name, String::from_utf8_lossy(&p.data).into_owned()))
        .collect();
    Some((audio, fields))
}

fn load(request: &mut tiny_http::Request) -> Reply {
    let mut body = Vec::new();
    let _ = request.as_reader().read_to_end(&mut body);
    if String::from_utf8_lossy(&body).contains("name=\"model\"") {
        (200, "text/plain", b"Load was successful!".to_vec())
    } else {
        (400, "text/plain", b"Invalid request".to_vec())
    }
}

/// `stub <len> bytes <fnv-1a 64>`: equal audio gives equal text, different audio differs.
/// A worker started with `-m` says which model file it runs: `[base.bin] stub ...`.
fn fingerprint(audio: &[u8], model: &str) -> String {
    let hash = audio.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    });
    let text = format!("stub {} bytes {hash:016x}", audio.len());
    match std::path::Path::new(model).file_name() {
        Some(name) => format!("[{}] {text}", name.to_string_lossy()),
        None => text,
    }
}

fn json_reply(value: serde_json::Value) -> Reply {
    (200, "application/json", value.to_string().into_bytes())
}

/// The text in segments of three words, spread evenly over the audio, as whisper-server's
/// `verbose_json` gives them: each segment's text starts with a space, its tokens carry times.
fn verbose_json(text: &str, language: &str, duration: f64, translate: bool) -> serde_json::Value {
    let words: Vec<&str> = text.split_whitespace().collect();
    let per_word = duration / words.len().max(1) as f64;
    let segments: Vec<serde_json::Value> = words
        .chunks(3)
        .enumerate()
        .map(|(i, chunk)| {
            let first = i * 3;
            let tokens: Vec<serde_json::Value> = chunk
                .iter()
                .enumerate()
                .map(|(j, word)| {
                    let start = (first + j) as f64 * per_word;
                    serde_json::json!({ "word": format!(" {word}"), "start": start,
                                        "end": start + per_word, "t_dtw": -1, "probability": 0.9 })
                })
                .collect();
            serde_json::json!({
                "id": i, "text": format!(" {}", chunk.join(" ")),
                "start": first as f64 * per_word, "end": (first + chunk.len()) as f64 * per_word,
                "tokens": (0..chunk.len()).map(|j| 1000 + first + j).collect::<Vec<_>>(),
                "words": tokens, "temperature": 0.0, "avg_logprob": -0.2, "no_speech_prob": 0.01,
            })
        })
        .collect();
    let joined: String = segments
        .iter()
        .map(|s| format!("{}\n", s["text"].as_str().unwrap_or("")))
        .collect();
    serde_json::json!({
        "task": if translate { "translate" } else { "transcribe" },
        "language": language,
        "duration": duration,
        "text": joined,
        "segments": segments,
    })
}

fn format_reply(format: &str, text: &str, language: &str, duration: f64, translate: bool) -> Reply {
    match format {
        "json" => json_reply(serde_json::json!({ "text": format!(" {text}") })),
        "verbose_json" => json_reply(verbose_json(text, language, duration, translate)),
        "text" => (
            200,
            "text/plain; charset=utf-8",
            format!("{text}\n").into_bytes(),
        ),
        "srt" => (
            200,
            "application/x-subrip",
            format!(
                "1\n00:00:00,000 --> {}\n{text}\n\n",
                timestamp(duration, ',')
            )
            .into_bytes(),
        ),
        "vtt" => (
            200,
            "text/vtt",
            format!(
                "WEBVTT\n\n00:00:00.000 --> {}\n{text}\n\n",
                timestamp(duration, '.')
            )
            .into_bytes(),
        ),
        _ => (400, "text/plain", b"Invalid request".to_vec()),
    }
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (VTT). Written here again rather than taken from
/// the manager's `engine::transcript`: the stub stands in for whisper-server, and sharing the
/// code under test would let a bug in it pass through both sides unseen.
fn timestamp(seconds: f64, separator: char) -> String {
    let ms = (seconds * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}
