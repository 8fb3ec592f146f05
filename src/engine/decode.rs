//! Stage 1 of a run: the upload becomes audio a worker can take, or a clear refusal.
//!
//! - A WAV file is read by the manager (`audio::wav`): any rate and channel count, resampled to
//!   16 kHz mono; one already at 16 kHz mono 16-bit is copied as it is. One in an encoding the
//!   reader does not know (mu-law, A-law, ADPCM) goes to ffmpeg when there is one.
//! - Anything else goes through ffmpeg (`audio::ffmpeg`) when `audio.ffmpeg` names one: m4a,
//!   webm/opus, ogg/opus, mp3, flac, amr, wma, the audio of a video, ...
//! - Without ffmpeg, MP3, FLAC and Ogg Vorbis, which whisper-server decodes by itself, go to a
//!   worker whole (and so cannot be cut into chunks); anything else is 415, naming the format
//!   seen and saying to install ffmpeg.
//!
//! Decoded audio is 16 kHz mono PCM, bounded by `audio.maxSeconds` while it is decoded.

use super::inference::Input;
use crate::audio::budget::{Budget, Exhausted, Reservation};
use crate::audio::ffmpeg::{ConvertError, Ffmpeg};
use crate::audio::pcm::Pcm;
use crate::audio::wav::{self, WavError};
use crate::audio::{self, Container};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// Fewer bytes than a WAV header cannot be audio worth sending to a worker.
const MIN_AUDIO_BYTES: usize = 44;

/// Audio ready for the workers.
#[derive(Debug)]
pub enum Audio {
    /// 16 kHz mono PCM: cut into chunks when long; `held` is its share of the budget of
    /// decoded audio, given back when it is dropped.
    Pcm { pcm: Pcm, held: Reservation },
    /// A format whisper-server decodes by itself, sent as it came (no ffmpeg here).
    Whole {
        bytes: Vec<u8>,
        container: Container,
    },
}

impl Audio {
    /// Seconds of audio, when known before a worker says.
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Audio::Pcm { pcm, .. } => Some(pcm.seconds()),
            Audio::Whole { .. } => None,
        }
    }
}

/// What decoding needs: the limits and the converter.
pub struct Decoder<'a> {
    pub ffmpeg: Option<&'a Ffmpeg>,
    pub max_bytes: u64,
    pub max_seconds: u64,
    /// Decoded audio held across requests (`audio.maxSecondsInMemory`).
    pub budget: &'a Budget,
    pub metrics: &'a Metrics,
}

impl Decoder<'_> {
    pub fn decode(&self, input: Input) -> Result<Audio, ApiError> {
        let from_file = matches!(input, Input::File(_));
        let bytes = match input {
            Input::Base64(content) => {
                audio::decode_base64(&content).map_err(ApiError::InvalidRequest)?
            }
            Input::Decoded(bytes) | Input::File(bytes) => bytes,
        };
        if bytes.len() < MIN_AUDIO_BYTES {
            return Err(refusal(
                from_file,
                format!(
                    "the audio is {} bytes: too short to hold any sound",
                    bytes.len()
                ),
            ));
        }
        if bytes.len() as u64 > self.max_bytes {
            return Err(ApiError::PayloadTooLarge {
                limit: self.max_bytes,
            });
        }
        let limit = self.max_seconds as f64;
        match (audio::sniff(&bytes), self.ffmpeg) {
            // Its length is in its header: its share is held before it is decoded.
            (Some(Container::Wav), ffmpeg) => match (wav::seconds(&bytes), ffmpeg) {
                (Ok(seconds), _) if seconds <= limit => {
                    let held = self.hold(seconds)?;
                    let pcm =
                        wav::decode(&bytes, limit).map_err(|e| self.wav_refusal(e, from_file))?;
                    Ok(Audio::Pcm { pcm, held })
                }
                (Ok(seconds), _) => {
                    Err(self.wav_refusal(WavError::TooLong { seconds, limit }, from_file))
                }
                // mu-law, A-law, ADPCM, ... in a WAV: not the manager's reader's, but ffmpeg's.
                (Err(WavError::Unsupported { .. }), Some(ffmpeg)) => {
                    self.convert(ffmpeg, bytes, from_file)
                }
                (Err(e), _) => Err(self.wav_refusal(e, from_file)),
            },
            (_, Some(ffmpeg)) => self.convert(ffmpeg, bytes, from_file),
            (Some(container), None) => Ok(Audio::Whole { bytes, container }),
            (None, None) => Err(ApiError::UnsupportedMediaType(format!(
                "the upload looks like {}, which only ffmpeg can decode, and conversion is off \
                 (audio.ffmpeg); install ffmpeg (apt-get install ffmpeg), or send WAV, MP3, FLAC \
                 or Ogg Vorbis",
                audio::sniff_kind(&bytes)
            ))),
        }
    }

    /// The upload decoded by ffmpeg. Its length is known once it is decoded, so it is held
    /// then; `audio.maxConversions` bounds the conversions under way.
    fn convert(&self, ffmpeg: &Ffmpeg, bytes: Vec<u8>, from_file: bool) -> Result<Audio, ApiError> {
        let pcm = ffmpeg
            .decode(&bytes, self.max_seconds as f64)
            .map_err(|e| self.conversion_refusal(e, &bytes, from_file))?;
        let held = self.hold(pcm.seconds())?;
        Ok(Audio::Pcm { pcm, held })
    }

    /// `seconds` of the budget of decoded audio, or a 503 saying it is spent.
    fn hold(&self, seconds: f64) -> Result<Reservation, ApiError> {
        self.budget.reserve(seconds).map_err(|e| budget_spent(&e))
    }

    fn wav_refusal(&self, e: WavError, from_file: bool) -> ApiError {
        match e {
            WavError::TooLong { seconds, .. } => ApiError::AudioTooLong {
                seconds,
                limit: self.max_seconds,
            },
            other => refusal(from_file, other.to_string()),
        }
    }

    fn conversion_refusal(&self, e: ConvertError, bytes: &[u8], from_file: bool) -> ApiError {
        self.metrics.record_conversion_failure();
        match e {
            ConvertError::TooLong { seconds, .. } => ApiError::AudioTooLong {
                seconds,
                limit: self.max_seconds,
            },
            ConvertError::Undecodable(reason) => refusal(
                from_file,
                format!(
                    "the upload (it looks like {}) is not audio ffmpeg can decode: {reason}",
                    audio::sniff_kind(bytes)
                ),
            ),
            ConvertError::Busy => ApiError::CapacityExceeded {
                retry_after: std::time::Duration::from_secs(2),
                reason: "every audio conversion slot is busy (audio.maxConversions)".into(),
            },
            ConvertError::Timeout(after) => ApiError::Timeout(format!(
                "converting the audio took longer than {} s (audio.conversionTimeoutMs)",
                after.as_secs()
            )),
            ConvertError::Io(e) => ApiError::Internal(format!("running ffmpeg failed: {e}")),
        }
    }
}

/// A 503 for a recording that does not fit beside the decoded audio held now.
fn budget_spent(e: &Exhausted) -> ApiError {
    ApiError::CapacityExceeded {
        retry_after: std::time::Duration::from_secs(30),
        reason: format!(
            "{:.0} s of audio does not fit beside the {:.0} s the manager holds decoded now \
             (audio.maxSecondsInMemory {:.0} s)",
            e.wanted, e.held, e.limit
        ),
    }
}

/// A 400 naming the field the audio came in.
fn refusal(from_file: bool, why: String) -> ApiError {
    if from_file {
        ApiError::InvalidField { field: "file", why }
    } else {
        ApiError::InvalidRequest(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(bytes)
    }

    fn decoder<'a>(metrics: &'a Metrics, budget: &'a Budget) -> Decoder<'a> {
        Decoder {
            ffmpeg: None,
            max_bytes: 100_000,
            max_seconds: 2,
            budget,
            metrics,
        }
    }

    #[test]
    fn without_ffmpeg_wav_is_decoded_mp3_goes_whole_and_the_rest_is_415() {
        let (metrics, budget) = (Metrics::default(), Budget::new(10));
        let d = decoder(&metrics, &budget);
        let wav = crate::audio::tests::silent_wav(1600);
        match d.decode(Input::Base64(b64(&wav))).unwrap() {
            Audio::Pcm { pcm, .. } => assert_eq!(pcm.samples.len(), 1600),
            other => panic!("{other:?}"),
        }
        let mut mp3 = b"ID3\x04".to_vec();
        mp3.resize(500, 0);
        assert!(matches!(
            d.decode(Input::File(mp3)).unwrap(),
            Audio::Whole {
                container: Container::Mp3,
                ..
            }
        ));
        let mut m4a = b"\0\0\0\x20ftypM4A ".to_vec();
        m4a.resize(500, 0);
        match d.decode(Input::File(m4a)) {
            Err(ApiError::UnsupportedMediaType(why)) => {
                assert!(
                    why.contains("m4a") && why.contains("install ffmpeg"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    /// A WAV of `seconds` of mu-law (format 7, 8 bits at 8 kHz), which the manager's reader
    /// does not read: an 8-bit PCM one whose fmt chunk names mu-law instead.
    fn mu_law_wav(seconds: u32) -> Vec<u8> {
        use crate::audio::wav::tests::{wav_file, Store};
        let frames = 8000 * seconds as usize;
        let mut wav = wav_file(8000, 1, frames, Store::U8, false, |_, _| 0.0);
        let tag = wav.windows(4).position(|w| w == b"fmt ").unwrap() + 8;
        wav[tag..tag + 2].copy_from_slice(&7u16.to_le_bytes());
        wav
    }

    #[test]
    fn a_wav_encoding_the_reader_does_not_know_is_refused_without_ffmpeg() {
        let (metrics, budget) = (Metrics::default(), Budget::new(10));
        match decoder(&metrics, &budget).decode(Input::File(mu_law_wav(1))) {
            Err(ApiError::InvalidField { why, .. }) => {
                assert!(
                    why.contains("mu-law") && why.contains("not supported"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    #[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
    fn a_wav_encoding_the_reader_does_not_know_goes_to_ffmpeg() {
        let ffmpeg = Ffmpeg::find("ffmpeg", 1, std::time::Duration::from_secs(30))
            .expect("this test needs ffmpeg (apt-get install ffmpeg)")
            .unwrap();
        let (metrics, budget) = (Metrics::default(), Budget::new(10));
        let d = Decoder {
            ffmpeg: Some(&ffmpeg),
            ..decoder(&metrics, &budget)
        };
        match d.decode(Input::File(mu_law_wav(1))).unwrap() {
            Audio::Pcm { pcm, .. } => {
                assert!((pcm.seconds() - 1.0).abs() < 0.01, "{}", pcm.seconds())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decoded_audio_past_the_budget_is_refused_until_some_is_given_back() {
        let (metrics, budget) = (Metrics::default(), Budget::new(3));
        let d = Decoder {
            max_seconds: 2,
            ..decoder(&metrics, &budget)
        };
        let two_seconds = || Input::File(crate::audio::tests::silent_wav(32_000));
        let first = d.decode(two_seconds()).unwrap();
        assert_eq!(budget.held(), 2.0);
        match d.decode(two_seconds()) {
            Err(ApiError::CapacityExceeded { reason, .. }) => {
                assert!(reason.contains("audio.maxSecondsInMemory"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(budget.held(), 2.0, "a refusal holds nothing");
        drop(first);
        assert!(d.decode(two_seconds()).is_ok());
        assert_eq!(
            budget.held(),
            0.0,
            "the audio was dropped, its share given back"
        );
    }

    #[test]
    fn refusals_name_the_field_and_the_limits() {
        let (metrics, budget) = (Metrics::default(), Budget::new(10));
        let d = decoder(&metrics, &budget);
        assert!(matches!(
            d.decode(Input::Base64(String::new())),
            Err(ApiError::InvalidRequest(_))
        ));
        assert!(matches!(
            d.decode(Input::File(b"RIFF".to_vec())),
            Err(ApiError::InvalidField { field: "file", .. })
        ));
        let big = crate::audio::tests::silent_wav(16_000 * 4);
        assert!(matches!(
            d.decode(Input::File(big)),
            Err(ApiError::PayloadTooLarge { .. })
        ));
        let d = Decoder {
            max_bytes: 1_000_000,
            ..decoder(&metrics, &budget)
        };
        let long = crate::audio::tests::silent_wav(16_000 * 3);
        assert!(matches!(
            d.decode(Input::File(long)),
            Err(ApiError::AudioTooLong { limit: 2, .. })
        ));
    }
}
