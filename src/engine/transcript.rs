//! What a worker's `verbose_json` answer means, and every format derived from it.
//!
//! Every route asks the worker for the same thing (`verbose_json`, no language probabilities,
//! segments split on words: see `engine::inference`), so one parse serves the seed API with or
//! without timestamps, `json`, `text`, `srt`, `vtt` and OpenAI's `verbose_json`.
//!
//! whisper-server's segments start with a space where a word starts, and its top-level `text`
//! joins them with line breaks; segments end on word boundaries (`split_on_word`). So the text
//! is the segments' texts concatenated: the worker's text with its line breaks removed, never
//! a space inserted inside a word. Its `words` are really tokens (`" And"`, `" fellow"`, `"."`),
//! with times and probabilities; `Transcript::words` joins them into words.

use serde_json::{json, Value};

use super::languages;
use super::reply::{RawSegment, Reply};

/// One token as whisper-server reports it (under `words`).
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token's text, with the leading space that starts a word.
    pub text: String,
    /// Seconds.
    pub start: f64,
    pub end: f64,
    pub probability: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub id: u64,
    /// Seconds.
    pub start: f64,
    pub end: f64,
    /// As the worker wrote it: a leading space where a word starts.
    pub raw_text: String,
    pub token_ids: Vec<i64>,
    pub tokens: Vec<Token>,
    pub temperature: f64,
    /// Mean log-probability of the segment's tokens; `None` when the worker gave none.
    pub avg_logprob: Option<f64>,
    pub no_speech_prob: f64,
}

impl Segment {
    pub fn text(&self) -> &str {
        self.raw_text.trim()
    }

    /// `exp(avg_logprob)`, the geometric-mean token probability: a 0..1 figure clients can show.
    pub fn confidence(&self) -> f64 {
        self.avg_logprob.map_or(0.0, logprob_to_confidence)
    }

    /// The segment with its times cut to `duration`, or none when it starts at or after it:
    /// whisper decodes 30-second windows and can time a segment past the audio's end (seen:
    /// 0 to 10 s on 1.9 s of silence), which would overlap the next chunk once shifted, and run
    /// past the recording in subtitles.
    fn within(mut self, duration: f64) -> Option<Segment> {
        if duration <= 0.0 {
            return Some(self);
        }
        if self.start >= duration {
            return None;
        }
        self.end = self.end.min(duration);
        for token in &mut self.tokens {
            token.start = token.start.min(duration);
            token.end = token.end.min(duration);
        }
        Some(self)
    }
}

/// A word with its times, as OpenAI's `timestamp_granularities[]=word` gives them.
#[derive(Debug, Clone, PartialEq)]
pub struct Word {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// A detected language (`POST /api/v1/languages/detect`).
#[derive(Debug, Clone, PartialEq)]
pub struct Detection {
    /// An ISO 639-1 code.
    pub language: String,
    /// The detector's probability for it, 0 to 1.
    pub probability: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// `true` when the worker translated into English.
    pub translated: bool,
    /// The language whisper's detector found, when it was asked to detect one.
    pub detected: Option<Detection>,
    pub text: String,
    /// An ISO 639-1 code: the one asked for, or the one the worker detected.
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub segments: Vec<Segment>,
}

impl Transcript {
    /// Reads a `verbose_json` answer. `requested_language` (a code, or `auto`) wins over the
    /// worker's name for it; `wav_duration` stands in when the worker gives no duration.
    pub fn from_verbose_json(
        reply: Reply,
        requested_language: Option<&str>,
        wav_duration: Option<f64>,
    ) -> Transcript {
        let segments: Vec<Segment> = reply
            .segments
            .get()
            .unwrap_or_default()
            .into_iter()
            .map(segment)
            .collect();
        let duration = reply
            .duration
            .get()
            .or(wav_duration)
            .unwrap_or_else(|| segments.last().map_or(0.0, |s| s.end));
        let segments: Vec<Segment> = segments
            .into_iter()
            .filter_map(|s| s.within(duration))
            .collect();
        let text = segments
            .iter()
            .map(|s| s.raw_text.as_str())
            .collect::<String>()
            .trim()
            .to_string();
        let detected = reply.language.get().unwrap_or_default();
        let language = requested_language
            .filter(|l| !l.eq_ignore_ascii_case("auto"))
            .and_then(languages::code_of)
            .or_else(|| languages::code_of(&detected))
            .map_or(detected, String::from);
        Transcript {
            translated: reply.task.as_str() == Some("translate"),
            detected: None,
            text,
            language,
            duration,
            segments,
        }
    }

    /// Moves every time `offset` seconds later: a chunk's transcript placed where the chunk
    /// starts in its recording.
    pub fn shift(&mut self, offset: f64) {
        for segment in &mut self.segments {
            segment.start += offset;
            segment.end += offset;
            for token in &mut segment.tokens {
                token.start += offset;
                token.end += offset;
            }
        }
    }

    /// The transcripts of consecutive chunks of one recording, in order and already
    /// `shift`ed, as one: segments renumbered, texts joined with a space (chunks are cut in
    /// pauses and never overlap, so no word is doubled or lost at a seam). The language is the
    /// one spoken longest; `duration` the whole length.
    pub fn merge(parts: Vec<Transcript>, duration: f64) -> Transcript {
        let mut by_language: Vec<(String, f64)> = Vec::new();
        let mut segments = Vec::new();
        let mut texts = Vec::new();
        let mut translated = false;
        let mut detected = None;
        for part in parts {
            translated |= part.translated;
            detected = detected.or(part.detected);
            match by_language.iter_mut().find(|(l, _)| *l == part.language) {
                Some((_, seconds)) => *seconds += part.duration,
                None => by_language.push((part.language.clone(), part.duration)),
            }
            if !part.text.is_empty() {
                texts.push(part.text);
            }
            for mut segment in part.segments {
                segment.id = segments.len() as u64;
                segments.push(segment);
            }
        }
        Transcript {
            translated,
            detected,
            text: texts.join(" "),
            // The first of the longest-spoken, on a tie.
            language: by_language
                .into_iter()
                .fold(None::<(String, f64)>, |best, next| match best {
                    Some(b) if b.1 >= next.1 => Some(b),
                    _ => Some(next),
                })
                .map_or_else(String::new, |(l, _)| l),
            duration,
            segments,
        }
    }

    /// Segment confidences weighted by segment length, so a long clear passage is not outvoted
    /// by a short mumble; 0 when nothing was recognised. Rounded to 3 places.
    pub fn confidence(&self) -> f64 {
        let (weighted, total) = self
            .segments
            .iter()
            .filter(|s| s.avg_logprob.is_some())
            .fold((0.0, 0.0), |(weighted, total), s| {
                let length = (s.end - s.start).max(0.01);
                (weighted + s.confidence() * length, total + length)
            });
        if total > 0.0 {
            (weighted / total * 1000.0).round() / 1000.0
        } else {
            0.0
        }
    }

    /// The tokens joined into words: a token starting with a space starts a word, and
    /// punctuation joins the word before it, as openai-whisper does.
    pub fn words(&self) -> Vec<Word> {
        let mut words: Vec<Word> = Vec::new();
        for token in self.segments.iter().flat_map(|s| &s.tokens) {
            let piece = token.text.trim();
            if piece.is_empty() {
                continue;
            }
            let starts_word =
                token.text.starts_with(' ') && piece.chars().any(char::is_alphanumeric);
            match words.last_mut() {
                Some(word) if !starts_word => {
                    word.word.push_str(piece);
                    word.end = token.end;
                }
                _ => words.push(Word {
                    word: piece.to_string(),
                    start: token.start,
                    end: token.end,
                }),
            }
        }
        words
    }

    /// `response_format=text`: the text and a line break.
    pub fn to_text(&self) -> String {
        format!("{}\n", self.text)
    }

    /// `response_format=srt`.
    pub fn to_srt(&self) -> String {
        self.segments
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "{}\n{} --> {}\n{}\n\n",
                    i + 1,
                    timestamp(s.start, ','),
                    timestamp(s.end, ','),
                    s.text()
                )
            })
            .collect()
    }

    /// `response_format=vtt`.
    pub fn to_vtt(&self) -> String {
        let cues: String = self
            .segments
            .iter()
            .map(|s| {
                format!(
                    "{} --> {}\n{}\n\n",
                    timestamp(s.start, '.'),
                    timestamp(s.end, '.'),
                    s.text()
                )
            })
            .collect();
        format!("WEBVTT\n\n{cues}")
    }

    /// OpenAI's `verbose_json`: `task`, `language` (a name, as OpenAI gives it), `duration`,
    /// `text`, and `segments` and/or `words` as the granularities ask.
    pub fn to_openai_verbose(&self, segments: bool, words: bool) -> Value {
        let language = if self.translated {
            "english"
        } else {
            languages::name_of(&self.language).unwrap_or(&self.language)
        };
        let mut value = json!({
            "task": if self.translated { "translate" } else { "transcribe" },
            "language": language,
            "duration": self.duration,
            "text": self.text,
        });
        if segments {
            value["segments"] = self.segments.iter().map(openai_segment).collect();
        }
        if words {
            value["words"] = self
                .words()
                .iter()
                .map(|w| json!({ "word": w.word, "start": w.start, "end": w.end }))
                .collect();
        }
        value
    }

    /// OpenAI's `include[]=logprobs`: each token with its log-probability and UTF-8 bytes.
    pub fn logprobs(&self) -> Value {
        self.segments
            .iter()
            .flat_map(|s| &s.tokens)
            .map(|t| {
                json!({
                    "token": t.text,
                    "logprob": t.probability.max(f64::MIN_POSITIVE).ln(),
                    "bytes": t.text.as_bytes(),
                })
            })
            .collect()
    }
}

/// A segment in OpenAI's shape. `seek` is the segment's start in 10 ms frames (whisper.cpp
/// does not report the decoding window); `compression_ratio` is computed as openai-whisper
/// does: the text's length over its zlib-compressed length.
fn openai_segment(s: &Segment) -> Value {
    json!({
        "id": s.id,
        "seek": (s.start * 100.0).round() as u64,
        "start": s.start,
        "end": s.end,
        "text": s.raw_text,
        "tokens": s.token_ids,
        "temperature": s.temperature,
        "avg_logprob": s.avg_logprob.unwrap_or(0.0),
        "compression_ratio": compression_ratio(&s.raw_text),
        "no_speech_prob": s.no_speech_prob,
    })
}

fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let compressed = miniz_oxide::deflate::compress_to_vec_zlib(text.as_bytes(), 6);
    text.len() as f64 / compressed.len() as f64
}

fn segment(raw: RawSegment) -> Segment {
    let tokens = raw
        .words
        .get()
        .unwrap_or_default()
        .into_iter()
        .map(|w| Token {
            text: w.word.get().unwrap_or_default(),
            start: w.start.get().unwrap_or(0.0),
            end: w.end.get().unwrap_or(0.0),
            probability: w.probability.get().unwrap_or(0.0),
        })
        .collect();
    Segment {
        id: raw.id.get().unwrap_or(0),
        start: raw.start.get().unwrap_or(0.0),
        end: raw.end.get().unwrap_or(0.0),
        raw_text: raw.text.get().unwrap_or_default(),
        token_ids: raw.tokens.get().unwrap_or_default(),
        tokens,
        temperature: raw.temperature.get().unwrap_or(0.0),
        avg_logprob: raw.avg_logprob.get().filter(|l| l.is_finite()),
        no_speech_prob: raw.no_speech_prob.get().unwrap_or(0.0),
    }
}

/// whisper's `avg_logprob` is the mean log-probability of a segment's tokens; its exponential
/// is the geometric-mean token probability.
fn logprob_to_confidence(avg_logprob: f64) -> f64 {
    avg_logprob.exp().clamp(0.0, 1.0)
}

/// `HH:MM:SS,mmm` (SRT) or `HH:MM:SS.mmm` (VTT).
fn timestamp(seconds: f64, separator: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}{separator}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A `verbose_json` answer written as a `Value`, read as the worker's answer is.
    pub fn read(answer: &Value, language: Option<&str>, duration: Option<f64>) -> Transcript {
        let reply = Reply::read(&serde_json::to_vec(answer).unwrap()).unwrap();
        Transcript::from_verbose_json(reply, language, duration)
    }

    /// jfk.wav as whisper-server v1.8.5 answers it (tiny.en, `split_on_word`), shortened.
    pub fn jfk() -> Value {
        let token = |text: &str, start: f64, end: f64| json!({"word": text, "start": start, "end": end, "t_dtw": -1, "probability": 0.9});
        json!({
            "task": "transcribe", "language": "english", "duration": 11.0,
            "text": " And so my fellow Americans\n ask not.\n",
            "segments": [
                {"id": 0, "text": " And so my fellow Americans", "start": 0.0, "end": 3.0,
                 "tokens": [843, 523, 616, 5891, 3399],
                 "words": [token(" And", 0.32, 0.4), token(" so", 0.4, 0.52), token(" my", 0.69, 0.94),
                           token(" fellow", 0.94, 1.75), token(" Americans", 1.75, 2.11)],
                 "temperature": 0.0, "avg_logprob": -0.1, "no_speech_prob": 0.03},
                {"id": 1, "text": " ask not.", "start": 3.0, "end": 4.5,
                 "tokens": [1265, 407, 13],
                 "words": [token(" ask", 3.29, 3.65), token(" not", 4.0, 4.3), token(".", 4.3, 4.4)],
                 "temperature": 0.0, "avg_logprob": -0.3, "no_speech_prob": 0.03}
            ]
        })
    }

    #[test]
    fn the_text_is_the_segments_joined_without_line_breaks() {
        let t = read(&jfk(), None, None);
        assert_eq!(t.text, "And so my fellow Americans ask not.");
        assert_eq!(t.segments[1].text(), "ask not.");
        let mid_word = json!({"segments": [{"text": " Amer"}, {"text": "icans"}]});
        assert_eq!(
            read(&mid_word, None, None).text,
            "Americans",
            "a cut inside a word gets no space"
        );
    }

    #[test]
    fn the_language_is_always_a_code() {
        let detected = read(&jfk(), None, None);
        assert_eq!(detected.language, "en", "whisper's name, mapped");
        assert_eq!(read(&jfk(), Some("auto"), None).language, "en");
        assert_eq!(
            read(&jfk(), Some("de"), None).language,
            "de",
            "the one asked for"
        );
    }

    #[test]
    fn confidence_is_a_length_weighted_number_even_without_segments() {
        let t = read(&jfk(), None, None);
        let expected = ((-0.1f64).exp() * 3.0 + (-0.3f64).exp() * 1.5) / 4.5;
        assert!((t.confidence() - expected).abs() < 0.001);
        let silence = read(&json!({"segments": []}), None, Some(2.0));
        assert_eq!((silence.confidence(), silence.duration), (0.0, 2.0));
        assert_eq!(logprob_to_confidence(0.5), 1.0);
    }

    #[test]
    fn no_time_runs_past_the_end_of_the_audio() {
        let mut past_the_end = jfk();
        past_the_end["duration"] = json!(4.2);
        let t = read(&past_the_end, None, None);
        assert_eq!((t.segments[1].start, t.segments[1].end), (3.0, 4.2));
        let last_word = t.segments[1].tokens.last().unwrap();
        assert_eq!((last_word.start, last_word.end), (4.2, 4.2));
        assert_eq!(t.segments[0].end, 3.0, "times inside the audio are kept");
        past_the_end["duration"] = json!(3.0);
        let t = read(&past_the_end, None, None);
        assert_eq!(
            t.segments.len(),
            1,
            "a segment that starts at the end is dropped"
        );
        assert_eq!(t.text, "And so my fellow Americans");
    }

    #[test]
    fn tokens_join_into_words_with_their_punctuation() {
        let words = read(&jfk(), None, None).words();
        let texts: Vec<&str> = words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(
            texts,
            ["And", "so", "my", "fellow", "Americans", "ask", "not."]
        );
        assert_eq!((words[6].start, words[6].end), (4.0, 4.4));
    }

    #[test]
    fn subtitles_come_from_the_segments() {
        let t = read(&jfk(), None, None);
        assert_eq!(
            t.to_srt(),
            "1\n00:00:00,000 --> 00:00:03,000\nAnd so my fellow Americans\n\n\
             2\n00:00:03,000 --> 00:00:04,500\nask not.\n\n"
        );
        assert!(t
            .to_vtt()
            .starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:03.000\nAnd so"));
        assert_eq!(t.to_text(), "And so my fellow Americans ask not.\n");
        assert_eq!(timestamp(3723.4567, ','), "01:02:03,457");
    }

    #[test]
    fn chunks_merge_with_their_offsets() {
        let first = read(&jfk(), None, None);
        let second = read(&jfk(), Some("de"), None);
        let mut second = second;
        second.shift(30.0);
        let merged = Transcript::merge(vec![first.clone(), second], 42.0);
        assert_eq!(merged.text, format!("{} {}", first.text, first.text));
        assert_eq!(merged.segments.len(), 4);
        assert_eq!(
            merged.segments.iter().map(|s| s.id).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
        assert_eq!(
            (merged.segments[2].start, merged.segments[3].end),
            (30.0, 34.5)
        );
        let words = merged.words();
        assert_eq!(words.len(), 14);
        assert_eq!((words[7].word.as_str(), words[7].start), ("And", 30.32));
        assert_eq!(merged.duration, 42.0);
        assert_eq!(merged.language, "en", "tie: the first spoken");
    }

    #[test]
    fn openai_verbose_json_has_the_asked_granularities() {
        let t = read(&jfk(), None, None);
        let both = t.to_openai_verbose(true, true);
        assert_eq!(both["language"], "english");
        assert_eq!(both["words"][4]["word"], "Americans");
        let segment = &both["segments"][1];
        assert_eq!(segment["seek"], 300);
        assert_eq!(segment["tokens"], json!([1265, 407, 13]));
        assert!(segment["compression_ratio"].as_f64().unwrap() > 0.0);
        let only_segments = t.to_openai_verbose(true, false);
        assert!(only_segments.get("words").is_none());
        assert!(t.to_openai_verbose(false, true).get("segments").is_none());
        let logprobs = t.logprobs();
        assert_eq!(logprobs[0]["token"], " And");
        assert!((logprobs[0]["logprob"].as_f64().unwrap() - 0.9f64.ln()).abs() < 1e-9);
    }
}
