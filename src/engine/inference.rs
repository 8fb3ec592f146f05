//! One run of audio through the pool, in the stages the README's "The inference engine"
//! names, each a small function: validate, preprocess, execute (under a deadline),
//! postprocess, record. `/api/v1/transcriptions`, `/api/inference/:modelId`, the
//! `runInference` RPC, language detection and the OpenAI routes all run through here, so they
//! share limits, the capacity cap, metrics and the history.
//!
//! Every run asks the worker for the same shape (see `worker_fields`), and every format a
//! route answers with is derived from it (`engine::transcript`): `timestamps: true` costs what
//! `false` costs.
//!
//! A recording longer than `audio.chunkSeconds` is cut at pauses (`audio::chunk`) and its
//! chunks run in parallel on the model's workers as one group: the pool gives waiting requests
//! workers in turn, so a short clip is never stuck behind a long file. Chunks finish in any
//! order; they are reported (for streaming) and merged in order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::ops::Range;
use std::sync::Mutex;

use super::decode::{Audio, Decoder};
use super::history::Entry;
use super::languages;
use super::reply::Reply;
pub use super::transcript::Detection;
use super::transcript::Transcript;
use super::Engine;
use crate::audio::chunk;
use crate::audio::pcm::Pcm;
use crate::error::ApiError;
use crate::pool::client::InferenceForm;
use crate::pool::dispatch::{Deadline, Group, Served};

/// 16 kbit/s, below which no MP3, FLAC or Ogg Vorbis speech file goes: a file sent whole, of
/// unknown length, is at most its size over this many seconds long.
const LOWEST_BYTES_PER_SECOND: f64 = 2_000.0;

/// The audio as a transport received it, owned, so each form is freed as soon as the next is
/// made (the base64 text once decoded, the bytes once turned into PCM): a long recording is
/// tens of megabytes in each.
#[derive(Debug)]
pub enum Input {
    /// Base64 in a JSON field (`inputData`); refusals name the JSON.
    Base64(String),
    /// Audio from a JSON field whose base64 the transport decoded (`content`); refusals name
    /// the JSON.
    Decoded(Vec<u8>),
    /// The bytes of an uploaded file (the multipart `file` part); refusals name `file`.
    File(Vec<u8>),
}

/// What a request may ask of the worker beyond the audio; every value already validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Options {
    /// A code from `languages`, or `auto`; absent means the worker's default (`en`).
    pub language: Option<String>,
    /// Text that primes the decoder: names, spellings, the previous passage.
    pub prompt: Option<String>,
    /// 0 to 1.
    pub temperature: Option<f32>,
    /// Translate into English (a multilingual model only).
    pub translate: bool,
}

/// Longest `prompt` taken, in bytes: whisper keeps only the last 224 tokens of a prompt (half
/// its text context), about 1,000 characters of English; four times that is surely a mistake.
const MAX_PROMPT_BYTES: usize = 4096;

impl Options {
    /// Checks what a client sent, naming the field at fault: `language` must be `auto` or a
    /// code whisper knows, `temperature` a number from 0 to 1, `prompt` at most
    /// `MAX_PROMPT_BYTES`. whisper-server would answer a bad number with a 500 and an unknown
    /// language with an error of its own.
    pub fn checked(
        language: Option<&str>,
        prompt: Option<String>,
        temperature: Option<f64>,
        translate: bool,
    ) -> Result<Options, ApiError> {
        let language = match language.map(str::trim) {
            None | Some("") => None,
            Some(l) if l.eq_ignore_ascii_case("auto") => Some("auto".to_string()),
            Some(l) => Some(
                languages::code_of(l)
                    .filter(|code| code.eq_ignore_ascii_case(l))
                    .ok_or_else(|| ApiError::InvalidField {
                        field: "language",
                        why: format!("`{l:.20}` is not `auto` or a language code whisper knows, such as `en`"),
                    })?
                    .to_string(),
            ),
        };
        if prompt.as_ref().is_some_and(|p| p.len() > MAX_PROMPT_BYTES) {
            return Err(ApiError::InvalidField {
                field: "prompt",
                why: format!("is longer than {MAX_PROMPT_BYTES} bytes (whisper reads only its last 224 tokens)"),
            });
        }
        let temperature = match temperature {
            None => None,
            Some(t) if (0.0..=1.0).contains(&t) => Some(t as f32),
            Some(t) => {
                return Err(ApiError::InvalidField {
                    field: "temperature",
                    why: format!("{t} is not a number from 0 to 1"),
                })
            }
        };
        Ok(Options {
            language,
            prompt: prompt.filter(|p| !p.is_empty()),
            temperature,
            translate,
        })
    }
}

/// How long a run may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// The request's deadline (`server.requestTimeoutMs`) bounds its wait for the first
    /// worker; then each chunk has the time its length earns (`audio.chunkTimeoutFactor`).
    PerChunk { wait_until: Instant },
    /// One deadline for the whole run, the server's (`inference.inferenceTimeoutMs`) and the
    /// client's shorter one (`options.timeout` of `/api/inference`).
    Whole {
        server: Instant,
        client: Option<Instant>,
    },
}

/// A request to the engine.
#[derive(Debug)]
pub struct Job<'a> {
    /// A model id already checked against the settings.
    pub model: &'a str,
    pub input: Input,
    pub options: Options,
    pub budget: Budget,
}

/// What the worker is asked to do with the audio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Transcribe,
    DetectLanguage,
}

/// A finished run.
#[derive(Debug, Clone)]
pub struct Outcome<T> {
    pub inference_id: String,
    pub result: T,
    /// The worker that answered (the last chunk's, for a chunked run).
    pub worker_id: String,
    pub worker_port: u16,
    /// Milliseconds from the start of decoding to the end of postprocessing.
    pub processing_time: u64,
    pub timestamp: String,
}

/// What a streaming client hears of a run, in this order.
pub enum Event<'t> {
    /// The audio is decoded and cut: the transcription has begun.
    Began {
        chunks_total: usize,
        /// Seconds of audio, when known before a worker says (not for a file sent whole).
        seconds: Option<f64>,
    },
    /// One more chunk transcribed, in order, with its times in the whole recording.
    Chunk(Progressed<'t>),
}

pub struct Progressed<'t> {
    pub transcript: &'t Transcript,
    pub chunks_done: usize,
    pub chunks_total: usize,
}

/// The pieces one worker call needs.
struct Call<'a> {
    model: &'a str,
    task: Task,
    options: &'a Options,
    group: &'a Group<'a>,
}

impl Engine {
    /// Transcribes (or translates) `job`'s audio and records the run in the history.
    pub fn transcribe(&self, job: Job) -> Result<Outcome<Transcript>, ApiError> {
        self.transcribe_streaming(job, &|_| true)
    }

    /// `transcribe` for as long as `wanted` says the answer is still wanted (asked as each
    /// chunk but the last is done): once it says no (the client left), the chunks not yet
    /// begun are not run and the run ends with `ClientGone`.
    pub fn transcribe_while(
        &self,
        job: Job,
        wanted: &(dyn Fn() -> bool + Sync),
    ) -> Result<Outcome<Transcript>, ApiError> {
        // Asked only while chunks are left to skip (a short clip's run never asks).
        self.transcribe_streaming(job, &|event| match event {
            Event::Chunk(p) if p.chunks_done < p.chunks_total => wanted(),
            _ => true,
        })
    }

    /// `transcribe`, telling `progress` of each chunk, in order, as the transcript grows.
    /// `progress` answers whether anyone still listens: once it says no (the client of a
    /// stream left), the chunks not yet begun are not run and the run ends with `ClientGone`.
    pub fn transcribe_streaming(
        &self,
        job: Job,
        progress: &(dyn Fn(Event) -> bool + Sync),
    ) -> Result<Outcome<Transcript>, ApiError> {
        self.run(job, Task::Transcribe, progress)
    }

    /// Detects the language spoken in `job`'s audio (its first chunk), with whisper's own
    /// detector.
    pub fn detect_language(&self, job: Job) -> Result<Outcome<Detection>, ApiError> {
        let outcome = self.run(job, Task::DetectLanguage, &|_| true)?;
        let Outcome {
            inference_id,
            result,
            worker_id,
            worker_port,
            processing_time,
            timestamp,
        } = outcome;
        Ok(Outcome {
            inference_id,
            result: result
                .detected
                .ok_or_else(|| ApiError::WorkerError("the worker detected no language".into()))?,
            worker_id,
            worker_port,
            processing_time,
            timestamp,
        })
    }

    /// The stages, in order; the run is recorded in the history whatever the outcome.
    fn run(
        &self,
        job: Job,
        task: Task,
        progress: &(dyn Fn(Event) -> bool + Sync),
    ) -> Result<Outcome<Transcript>, ApiError> {
        let started = Instant::now();
        let inference_id = next_id();
        let Job {
            model,
            input,
            options,
            budget,
        } = job;
        let result = self
            .check_model_can(model, task, &options)
            .and_then(|()| self.decoder().decode(input))
            .and_then(|audio| {
                let group = self.pool.group();
                let call = Call {
                    model,
                    task,
                    options: &options,
                    group: &group,
                };
                self.transcribe_audio(&call, audio, budget, started, &inference_id, progress)
            });
        let processing_time = started.elapsed().as_millis() as u64;
        let timestamp = crate::clock::now_rfc3339();
        self.history.record(Entry {
            inference_id: inference_id.clone(),
            model_id: model.to_string(),
            processing_time,
            timestamp: timestamp.clone(),
            success: result.is_ok(),
            error: result.as_ref().err().map(|e| e.code().to_string()),
        });
        let (result, served) = result?;
        self.metrics.record_audio(model, result.duration);
        Ok(Outcome {
            inference_id,
            result,
            worker_id: served.worker_id,
            worker_port: served.port,
            processing_time,
            timestamp,
        })
    }

    fn decoder(&self) -> Decoder<'_> {
        Decoder {
            ffmpeg: self.ffmpeg.as_ref(),
            max_bytes: self.settings.server.max_body_bytes,
            max_seconds: self.settings.audio.max_seconds,
            budget: &self.decoded,
            metrics: &self.metrics,
        }
    }

    /// Stages 2 to 4 for decoded audio: one call for short audio or a whole file, else the
    /// chunks in parallel, merged.
    fn transcribe_audio(
        &self,
        call: &Call,
        audio: Audio,
        budget: Budget,
        started: Instant,
        inference_id: &str,
        progress: &(dyn Fn(Event) -> bool + Sync),
    ) -> Result<(Transcript, Who), ApiError> {
        // The audio's share of `audio.maxSecondsInMemory` is held until its chunks are done.
        let (pcm, _held) = match audio {
            Audio::Whole { bytes, container } => {
                let _ = progress(Event::Began {
                    chunks_total: 1,
                    seconds: None,
                });
                // Its length is unknown until the worker says: the deadline assumes the longest
                // it can be, at the lowest bitrate in use.
                let longest = (bytes.len() as f64 / LOWEST_BYTES_PER_SECOND)
                    .min(self.settings.audio.max_seconds as f64);
                let form = self.form(call, &container.file_name(), bytes.len(), |body| {
                    body.extend_from_slice(&bytes)
                });
                let deadline = self.deadline(budget, Some(longest), started, true);
                let (t, who) = self.call_worker(call, &form, deadline, None)?;
                self.report(progress, &t, 1, 1);
                return Ok((t, who));
            }
            Audio::Pcm { pcm, held } => (pcm, held),
        };
        let max_samples = self.settings.audio.chunk_seconds as usize * Pcm::RATE as usize;
        let mut ranges = chunk::chunks(&pcm.samples, max_samples);
        if call.task == Task::DetectLanguage {
            // whisper's detector reads the first 30 s; the rest would change nothing.
            ranges.truncate(1);
        }
        let tracker = self
            .progress
            .start(inference_id, call.model, pcm.seconds(), ranges.len());
        let _ = progress(Event::Began {
            chunks_total: ranges.len(),
            seconds: Some(pcm.seconds()),
        });
        let chunked = Chunked {
            engine: self,
            call,
            pcm: &pcm,
            ranges: &ranges,
            budget,
            started,
            progress,
            tracker: &tracker,
        };
        let (parts, who) = chunked.run()?;
        Ok((Transcript::merge(parts, pcm.seconds()), who))
    }

    /// The worker's form for a file of `audio_len` bytes, which `write_audio` writes into it.
    fn form(
        &self,
        call: &Call,
        file_name: &str,
        audio_len: usize,
        write_audio: impl Fn(&mut Vec<u8>),
    ) -> InferenceForm {
        let fields = self.worker_fields(call.task, call.options);
        InferenceForm::new(file_name, &fields, audio_len, write_audio)
    }

    /// The deadline of one call: the request's wait bound for the first (later chunks wait
    /// as long as the recording could take), and the chunk's own inference time.
    fn deadline(
        &self,
        budget: Budget,
        seconds: Option<f64>,
        started: Instant,
        first: bool,
    ) -> Deadline {
        match budget {
            Budget::Whole { server, client } => Deadline::new(server, client, started),
            Budget::PerChunk { wait_until } => {
                let seconds = seconds.unwrap_or(self.settings.audio.chunk_seconds as f64);
                let inference = self.settings.audio.chunk_timeout(seconds);
                if first {
                    Deadline::per_call(wait_until, inference, false)
                } else {
                    Deadline::per_call(Instant::now() + inference * 64, inference, true)
                }
            }
        }
    }

    /// One worker call and what its answer means.
    fn call_worker(
        &self,
        call: &Call,
        form: &InferenceForm,
        deadline: Deadline,
        seconds: Option<f64>,
    ) -> Result<(Transcript, Who), ApiError> {
        let served = self.execute(call.model, form, deadline, call.group)?;
        let reply = Reply::read(&served.reply.body).map_err(|e| {
            ApiError::WorkerError(format!(
                "the worker's answer is not whisper-server's verbose_json: {e}"
            ))
        })?;
        let detected = match call.task {
            Task::DetectLanguage => Some(detection(&reply)?),
            Task::Transcribe => None,
        };
        let mut transcript =
            Transcript::from_verbose_json(reply, call.options.language.as_deref(), seconds);
        transcript.detected = detected;
        Ok((
            transcript,
            Who {
                worker_id: served.worker_id,
                port: served.port,
            },
        ))
    }

    fn report(
        &self,
        progress: &(dyn Fn(Event) -> bool + Sync),
        t: &Transcript,
        done: usize,
        total: usize,
    ) {
        // The last and only chunk: whether anyone still listens changes nothing now.
        let _ = progress(Event::Chunk(Progressed {
            transcript: t,
            chunks_done: done,
            chunks_total: total,
        }));
    }

    /// An English-only model cannot translate or detect a language; whisper-server would
    /// silently answer an English transcript (or a meaningless guess) instead.
    fn check_model_can(&self, model: &str, task: Task, options: &Options) -> Result<(), ApiError> {
        let what = match task {
            Task::DetectLanguage => "detect a language",
            Task::Transcribe if options.translate => "translate",
            Task::Transcribe => return Ok(()),
        };
        let english_only = self
            .pool
            .config
            .models
            .get(model)
            .is_some_and(|m| m.english_only);
        if english_only {
            return Err(ApiError::InvalidRequest(format!(
                "model `{model}` is English-only (its file name ends in .en), so it cannot {what}; \
                 configure a multilingual model (README \"Real whisper\") and name it in `model`"
            )));
        }
        Ok(())
    }

    /// Stage 2, the worker's fields: always `verbose_json` with segments cut on word
    /// boundaries (every format is derived from it) and without per-language probabilities
    /// (they cost as much as the transcription and nothing uses them), then the request's
    /// options and the decoder settings of `whisperServer`.
    fn worker_fields(&self, task: Task, options: &Options) -> Vec<(&'static str, String)> {
        let ws = &self.settings.whisper_server;
        let mut fields = vec![
            ("response_format", "verbose_json".to_string()),
            ("split_on_word", "true".to_string()),
        ];
        match task {
            Task::Transcribe => fields.push(("no_language_probabilities", "true".into())),
            // The detector's probability comes with the language probabilities.
            Task::DetectLanguage => fields.push(("detect_language", "true".into())),
        }
        if let Some(language) = &options.language {
            fields.push(("language", language.clone()));
        }
        if let Some(prompt) = &options.prompt {
            fields.push(("prompt", prompt.clone()));
        }
        if let Some(temperature) = options.temperature {
            fields.push(("temperature", temperature.to_string()));
        }
        if options.translate {
            fields.push(("translate", "true".into()));
        }
        fields.extend([
            ("entropy_thold", ws.entropy_threshold.to_string()),
            ("logprob_thold", ws.logprob_threshold.to_string()),
            ("no_speech_thold", ws.no_speech_threshold.to_string()),
            ("best_of", ws.best_of.to_string()),
        ]);
        if ws.beam_size > 1 {
            fields.push(("beam_size", ws.beam_size.to_string()));
        }
        if ws.suppress_non_speech {
            fields.push(("suppress_nst", "true".into()));
        }
        fields
    }

    /// Stage 3: the pool runs the form before the deadline (queueing at capacity); a worker
    /// that misses the deadline is recycled and its late answer never reaches anyone.
    fn execute(
        &self,
        model: &str,
        form: &InferenceForm,
        deadline: Deadline,
        group: &Group,
    ) -> Result<Served, ApiError> {
        let started = Instant::now();
        let served = self.pool.infer(model, form, deadline, group)?;
        self.metrics.record_inference(model, started.elapsed());
        Ok(served)
    }
}

/// Who answered, for the response's `metadata`.
struct Who {
    worker_id: String,
    port: u16,
}

/// A recording's chunks on their way through the pool.
struct Chunked<'a> {
    engine: &'a Engine,
    call: &'a Call<'a>,
    pcm: &'a Pcm,
    ranges: &'a [Range<usize>],
    budget: Budget,
    started: Instant,
    progress: &'a (dyn Fn(Event) -> bool + Sync),
    tracker: &'a super::progress::Tracker<'a>,
}

/// Chunks transcribed so far, and the next one to report (they are reported in order).
struct Done {
    parts: Vec<Option<Transcript>>,
    next_to_report: usize,
    who: Option<Who>,
    failure: Option<ApiError>,
}

impl Chunked<'_> {
    /// Runs every chunk, at most as many at once as the model has workers, each taken in
    /// order by the first free runner; the first failure stops the rest (the answer is whole
    /// or an error, never a transcript with a hole).
    fn run(&self) -> Result<(Vec<Transcript>, Who), ApiError> {
        let total = self.ranges.len();
        let workers = self
            .engine
            .pool
            .config
            .models
            .get(self.call.model)
            .map_or(1, |m| m.pool_size);
        let runners = workers.clamp(1, total.max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = Mutex::new(Done {
            parts: (0..total).map(|_| None).collect(),
            next_to_report: 0,
            who: None,
            failure: None,
        });
        let runner = || loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= total || lock(&done).failure.is_some() {
                return;
            }
            let outcome = self.chunk(i);
            self.finish(i, outcome, &done);
        };
        if runners == 1 {
            // Most requests are one chunk: no thread for it.
            runner();
        } else {
            std::thread::scope(|scope| {
                for _ in 0..runners {
                    scope.spawn(runner);
                }
            });
        }
        let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(failure) = done.failure {
            return Err(failure);
        }
        let who = done
            .who
            .ok_or_else(|| ApiError::Internal("no chunk was run".into()))?;
        Ok((done.parts.into_iter().flatten().collect(), who))
    }

    /// Chunk `i` through a worker, its times moved to where it starts in the recording.
    fn chunk(&self, i: usize) -> Result<(Transcript, Who), ApiError> {
        let range = self.ranges[i].clone();
        let offset = range.start as f64 / f64::from(Pcm::RATE);
        let seconds = range.len() as f64 / f64::from(Pcm::RATE);
        let form = self
            .engine
            .form(self.call, "audio.wav", Pcm::wav_len(&range), |body| {
                self.pcm.write_wav(range.clone(), body)
            });
        let deadline = self
            .engine
            .deadline(self.budget, Some(seconds), self.started, i == 0);
        let (mut transcript, who) =
            self.engine
                .call_worker(self.call, &form, deadline, Some(seconds))?;
        transcript.shift(offset);
        Ok((transcript, who))
    }

    /// Files a chunk's outcome and reports every chunk that is now next in order.
    fn finish(&self, i: usize, outcome: Result<(Transcript, Who), ApiError>, done: &Mutex<Done>) {
        let mut done = lock(done);
        match outcome {
            Ok((transcript, who)) => {
                done.parts[i] = Some(transcript);
                done.who = Some(who);
                let chunks_done = self.tracker.chunk_done();
                while let Some(Some(t)) = done.parts.get(done.next_to_report) {
                    let listening = (self.progress)(Event::Chunk(Progressed {
                        transcript: t,
                        chunks_done,
                        chunks_total: self.ranges.len(),
                    }));
                    done.next_to_report += 1;
                    // Nobody reads the rest: the chunks not yet begun are not run (those on a
                    // worker now finish, each bounded by its deadline).
                    if !listening && done.failure.is_none() {
                        done.failure = Some(ApiError::ClientGone);
                    }
                }
            }
            Err(e) if done.failure.is_none() => {
                log::warn!("chunk {} of {} failed: {e}", i + 1, self.ranges.len());
                done.failure = Some(e);
            }
            Err(_) => {}
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stage 4 of a detection: whisper-server names the language and gives its probability.
fn detection(reply: &Reply) -> Result<Detection, ApiError> {
    let name = reply
        .detected_language
        .as_str()
        .or(reply.language.as_str())
        .ok_or_else(|| ApiError::WorkerError("the worker detected no language".into()))?;
    let language = languages::code_of(name).ok_or_else(|| {
        ApiError::WorkerError(format!(
            "the worker detected `{name:.40}`, which whisper does not know"
        ))
    })?;
    Ok(Detection {
        language: language.to_string(),
        probability: reply.detected_language_probability.0.unwrap_or(0.0),
    })
}

/// `inf-<seconds since epoch, hex>-<counter>`: unique within a run and across restarts.
fn next_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(1);
    let boot = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    format!("inf-{boot:x}-{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detection_is_a_code_and_a_probability() {
        let reply = Reply::read(
            br#"{"language": "german", "detected_language": "german",
                 "detected_language_probability": 0.93}"#,
        )
        .unwrap();
        assert_eq!(
            detection(&reply).unwrap(),
            Detection {
                language: "de".into(),
                probability: 0.93
            }
        );
        let elvish = Reply::read(br#"{"language": "elvish"}"#).unwrap();
        assert!(detection(&elvish).is_err());
    }

    #[test]
    fn options_are_checked_and_name_the_field() {
        let field = |r: Result<Options, ApiError>| match r {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(Options::checked(Some("xx"), None, None, false)),
            "language"
        );
        assert_eq!(
            field(Options::checked(Some("english"), None, None, false)),
            "language"
        );
        assert_eq!(
            field(Options::checked(None, None, Some(1.5), false)),
            "temperature"
        );
        assert_eq!(
            field(Options::checked(None, Some("p".repeat(5000)), None, false)),
            "prompt"
        );
        let ok = Options::checked(Some("DE"), Some(String::new()), Some(0.2), true).unwrap();
        assert_eq!(ok.language.as_deref(), Some("de"));
        assert_eq!(
            (ok.prompt, ok.temperature, ok.translate),
            (None, Some(0.2), true)
        );
        let auto = Options::checked(Some("Auto"), None, None, false).unwrap();
        assert_eq!(auto.language.as_deref(), Some("auto"));
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(next_id(), next_id());
    }
}
