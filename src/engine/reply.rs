//! whisper-server's `verbose_json` answer, read straight into the fields the manager uses.
//!
//! The answer is read leniently, as a worker of another version may shape it: a field that is
//! missing, or holds a value of another type, counts as absent, and an element of `segments`
//! or `words` that is not an object is skipped (not taken for an empty segment or token).
//! What is not read is skipped unchecked but for JSON's structure (serde_json's skipping
//! neither recurses nor checks UTF-8 or number ranges). An answer that is not JSON, not an
//! object, or names a field read here twice fails to read. Parsing into these types rather
//! than a `serde_json::Value` keeps a map, a key and a number box per field off the allocator
//! (about a quarter of a short transcription's allocations) and never copies what is unused.

use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct Reply {
    pub segments: Loose<Vec<RawSegment>>,
    pub duration: Loose<f64>,
    /// whisper's name for the language (`english`), detected or asked for.
    pub language: Loose<String>,
    /// `translate` when the worker translated.
    pub task: Loose<String>,
    /// What `detect_language=true` answers.
    pub detected_language: Loose<String>,
    pub detected_language_probability: Loose<f64>,
}

impl Reply {
    pub fn read(answer: &[u8]) -> serde_json::Result<Reply> {
        // Through `Loose`, since a struct derived by serde also reads from an array, by position.
        match serde_json::from_slice::<Loose<Reply>>(answer)? {
            Loose(Some(reply)) => Ok(reply),
            Loose(None) => Err(de::Error::custom("the answer is not an object")),
        }
    }
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct RawSegment {
    pub id: Loose<u64>,
    pub text: Loose<String>,
    pub start: Loose<f64>,
    pub end: Loose<f64>,
    /// Token ids; an element that is not an integer is skipped.
    pub tokens: Loose<Vec<i64>>,
    /// Tokens with their times (whisper-server's name for them).
    pub words: Loose<Vec<RawToken>>,
    pub temperature: Loose<f64>,
    pub avg_logprob: Loose<f64>,
    pub no_speech_prob: Loose<f64>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub struct RawToken {
    pub word: Loose<String>,
    pub start: Loose<f64>,
    pub end: Loose<f64>,
    pub probability: Loose<f64>,
}

/// A field that is `None` when the answer holds a value of another type there.
#[derive(Debug)]
pub struct Loose<T>(pub Option<T>);

impl<T> Default for Loose<T> {
    fn default() -> Self {
        Loose(None)
    }
}

impl<T> Loose<T> {
    pub fn get(self) -> Option<T> {
        self.0
    }
}

impl Loose<String> {
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

/// What a type takes from each kind of JSON value; every other kind is skipped, whole.
pub trait Pick: Sized {
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
    fn from_seq<'de, A: SeqAccess<'de>>(seq: A) -> Result<Option<Self>, A::Error> {
        IgnoredAny.visit_seq(seq).map(|_| None)
    }
    fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
        IgnoredAny.visit_map(map).map(|_| None)
    }
}

impl Pick for f64 {
    fn from_u64(n: u64) -> Option<f64> {
        Some(n as f64)
    }
    fn from_i64(n: i64) -> Option<f64> {
        Some(n as f64)
    }
    fn from_f64(n: f64) -> Option<f64> {
        Some(n)
    }
}

impl Pick for u64 {
    fn from_u64(n: u64) -> Option<u64> {
        Some(n)
    }
}

impl Pick for i64 {
    fn from_u64(n: u64) -> Option<i64> {
        i64::try_from(n).ok()
    }
    fn from_i64(n: i64) -> Option<i64> {
        Some(n)
    }
}

impl Pick for String {
    fn from_str(s: &str) -> Option<String> {
        Some(s.to_owned())
    }
}

impl<T: Pick> Pick for Vec<T> {
    fn from_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<Option<Self>, A::Error> {
        let mut items = Vec::new();
        while let Some(Loose(item)) = seq.next_element::<Loose<T>>()? {
            items.extend(item);
        }
        Ok(Some(items))
    }
}

/// An object read as one of the structs above.
macro_rules! pick_struct {
    ($($name:ident),*) => {$(
        impl Pick for $name {
            fn from_map<'de, A: MapAccess<'de>>(map: A) -> Result<Option<Self>, A::Error> {
                $name::deserialize(de::value::MapAccessDeserializer::new(map)).map(Some)
            }
        }
    )*};
}
pick_struct!(Reply, RawSegment, RawToken);

impl<'de, T: Pick> Deserialize<'de> for Loose<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LooseVisitor(PhantomData))
    }
}

struct LooseVisitor<T>(PhantomData<T>);

impl<'de, T: Pick> Visitor<'de> for LooseVisitor<T> {
    type Value = Loose<T>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Loose<T>, E> {
        Ok(Loose(None))
    }
    fn visit_unit<E>(self) -> Result<Loose<T>, E> {
        Ok(Loose(None))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Loose<T>, E> {
        Ok(Loose(T::from_u64(n)))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Loose<T>, E> {
        Ok(Loose(T::from_i64(n)))
    }
    fn visit_f64<E>(self, n: f64) -> Result<Loose<T>, E> {
        Ok(Loose(T::from_f64(n)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Loose<T>, E> {
        Ok(Loose(T::from_str(s)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Loose<T>, A::Error> {
        T::from_seq(seq).map(Loose)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Loose<T>, A::Error> {
        T::from_map(map).map(Loose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_of_another_type_count_as_absent() {
        let reply = Reply::read(
            br#"{"duration": "long", "language": 7, "task": null, "extra": {"a": [1, {"b": 2}]},
                 "segments": [{"id": -1, "start": "0", "end": 2, "tokens": [1, "x", 2.5, -3, {}],
                               "words": [{"word": " hi", "start": 0.5, "probability": true}, 3, []],
                               "avg_logprob": [0.1]},
                              "not a segment", null]}"#,
        )
        .unwrap();
        assert!(reply.duration.0.is_none() && reply.language.0.is_none());
        assert!(reply.task.0.is_none());
        let segments = reply.segments.get().unwrap();
        assert_eq!(
            segments.len(),
            1,
            "elements that are not objects are skipped"
        );
        let s = &segments[0];
        assert_eq!((s.id.0, s.start.0, s.end.0), (None, None, Some(2.0)));
        assert_eq!(s.tokens.0.as_deref(), Some(&[1, -3][..]), "integers only");
        assert!(s.avg_logprob.0.is_none() && s.text.0.is_none());
        let words = s.words.0.as_ref().unwrap();
        assert_eq!(words.len(), 1);
        assert_eq!(words[0].word.0.as_deref(), Some(" hi"));
        assert_eq!((words[0].start.0, words[0].end.0), (Some(0.5), None));
        assert!(words[0].probability.0.is_none());
    }

    #[test]
    fn numbers_and_strings_read_as_serde_json_values_did() {
        let reply = Reply::read(
            br#"{"duration": 3, "language": "\u00fcber \"q\"",
                 "segments": [{"id": 1.0, "start": -1, "end": 2.5e0, "avg_logprob": -2,
                               "tokens": [9223372036854775807, 9223372036854775808, -9223372036854775808],
                               "text": " caf\u00e9"}]}"#,
        )
        .unwrap();
        assert_eq!(
            reply.duration.0,
            Some(3.0),
            "an integer is a number of seconds"
        );
        assert_eq!(
            reply.language.as_str(),
            Some("\u{fc}ber \"q\""),
            "escapes decoded"
        );
        let s = &reply.segments.0.unwrap()[0];
        assert_eq!(s.id.0, None, "as `as_u64`: a float is no id");
        assert_eq!(
            (s.start.0, s.end.0, s.avg_logprob.0),
            (Some(-1.0), Some(2.5), Some(-2.0))
        );
        assert_eq!(
            s.tokens.0.as_deref(),
            Some(&[i64::MAX, i64::MIN][..]),
            "as `as_i64`: past i64::MAX is no token id"
        );
        assert_eq!(s.text.as_str(), Some(" caf\u{e9}"));
    }

    #[test]
    fn only_an_object_of_json_reads() {
        assert!(Reply::read(b"{}").unwrap().segments.0.is_none());
        for bad in [
            &b"[]"[..],
            b"\"text\"",
            b"null",
            b"{\"duration\": 1",
            b"{} x",
            b"",
        ] {
            assert!(
                Reply::read(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(
            Reply::read(br#"{"duration": 1, "duration": 2}"#).is_err(),
            "a field named twice is not whisper-server's answer"
        );
        assert!(Reply::read(br#"{"segments": [{"end": 1, "end": 2}]}"#).is_err());
        assert!(
            Reply::read(br#"{"extra": 1, "extra": 2}"#).is_ok(),
            "a field not read is not looked at"
        );
    }

    #[test]
    fn deep_nesting_is_skipped_without_recursing() {
        // serde_json skips a value without recursing into it, so a hostile worker cannot
        // overflow a request thread's stack: this reads on an eighth of its 2 MB.
        let deep = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let answer = format!(
            r#"{{"segments": [{}], "extra": {}, "duration": 2}}"#,
            deep(100_000),
            deep(100_000)
        );
        let reply = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || Reply::read(answer.as_bytes()).unwrap())
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(reply.duration.0, Some(2.0));
        assert!(reply.segments.0.unwrap().is_empty());
    }
}
