//! What a worker's `json` or `verbose_json` answer means: one clean text, its language and
//! duration, and segments with a confidence derived from whisper's log-probabilities.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// Seconds.
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub confidence: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    pub text: String,
    pub language: Option<String>,
    /// Seconds of audio.
    pub duration: Option<f64>,
    pub segments: Vec<Segment>,
    /// Length-weighted mean of the segment confidences; `None` without segments.
    pub confidence: Option<f64>,
}

impl Transcript {
    /// Reads the worker's answer. The caller's language code ("en") wins over the worker's
    /// name for it ("english"); the worker's is used when the language was detected. The
    /// duration comes from the worker or, failing that, from the WAV header.
    pub fn from_worker(
        reply: &Value,
        requested_language: Option<&str>,
        wav_duration: Option<f64>,
    ) -> Transcript {
        let segments: Vec<Segment> = reply
            .get("segments")
            .and_then(Value::as_array)
            .map(|s| s.iter().map(segment).collect())
            .unwrap_or_default();
        let language = requested_language
            .filter(|l| !l.eq_ignore_ascii_case("auto"))
            .or_else(|| reply.get("language").and_then(Value::as_str))
            .map(String::from);
        Transcript {
            text: clean_text(reply.get("text").and_then(Value::as_str).unwrap_or("")),
            language,
            duration: reply
                .get("duration")
                .and_then(Value::as_f64)
                .or(wav_duration),
            confidence: confidence(&segments),
            segments,
        }
    }
}

/// whisper-server joins segments with newlines and starts them with a space; clients want
/// one line of text.
pub fn clean_text(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn segment(raw: &Value) -> Segment {
    let number = |key: &str| raw.get(key).and_then(Value::as_f64);
    Segment {
        start: number("start").unwrap_or(0.0),
        end: number("end").unwrap_or(0.0),
        text: clean_text(raw.get("text").and_then(Value::as_str).unwrap_or("")),
        confidence: number("avg_logprob").map(logprob_to_confidence),
    }
}

/// whisper's `avg_logprob` is the mean log-probability of a segment's tokens; its exponential
/// is the geometric-mean token probability, a 0..1 figure clients can show.
fn logprob_to_confidence(avg_logprob: f64) -> f64 {
    avg_logprob.exp().clamp(0.0, 1.0)
}

/// Segment confidences weighted by segment length, so a long clear passage is not outvoted
/// by a short mumble. `None` without segments (`json` carries no probabilities).
fn confidence(segments: &[Segment]) -> Option<f64> {
    let (weighted, total) = segments.iter().fold((0.0, 0.0), |(weighted, total), s| {
        let Some(c) = s.confidence else {
            return (weighted, total);
        };
        let length = (s.end - s.start).max(0.01);
        (weighted + c * length, total + length)
    });
    (total > 0.0).then(|| (weighted / total * 1000.0).round() / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verbose_json_fills_segments_duration_and_confidence() {
        let reply = json!({
            "task": "transcribe", "language": "english", "duration": 11.0, "text": " And so my fellow Americans",
            "segments": [
                {"id": 0, "text": " And so", "start": 0.0, "end": 1.0, "avg_logprob": -0.1, "no_speech_prob": 0.0},
                {"id": 1, "text": " my fellow\n Americans", "start": 1.0, "end": 4.0, "avg_logprob": -0.3}
            ]
        });
        let t = Transcript::from_worker(&reply, None, None);
        assert_eq!(t.text, "And so my fellow Americans");
        assert_eq!(
            t.language.as_deref(),
            Some("english"),
            "the worker's, when none was asked for"
        );
        assert_eq!(
            Transcript::from_worker(&reply, Some("en"), None)
                .language
                .as_deref(),
            Some("en")
        );
        assert_eq!(t.duration, Some(11.0));
        assert_eq!(t.segments[1].text, "my fellow Americans");
        let expected = ((-0.1f64).exp() * 1.0 + (-0.3f64).exp() * 3.0) / 4.0;
        assert!((t.confidence.unwrap() - expected).abs() < 0.001);
    }

    #[test]
    fn plain_json_has_no_segments_and_uses_the_request_language_and_wav_length() {
        let t = Transcript::from_worker(&json!({"text": " hi\n there \n"}), Some("de"), Some(2.5));
        assert_eq!(t.text, "hi there");
        assert!(t.segments.is_empty());
        assert_eq!(t.confidence, None);
        assert_eq!((t.language.as_deref(), t.duration), (Some("de"), Some(2.5)));
        assert_eq!(
            Transcript::from_worker(&json!({"text": ""}), Some("auto"), None).language,
            None
        );
    }

    #[test]
    fn confidence_is_clamped() {
        assert_eq!(logprob_to_confidence(0.5), 1.0);
        assert!(logprob_to_confidence(-50.0) >= 0.0);
    }
}
