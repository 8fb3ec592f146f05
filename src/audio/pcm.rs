//! Decoded audio in the one shape whisper works at: 16 kHz, mono, signed 16-bit samples.
//! Every upload becomes a [`Pcm`] (through [`super::wav::decode`] or
//! [`super::ffmpeg::Ffmpeg::decode`]) before it is cut into the pieces sent to workers, and
//! [`Pcm::write_wav`] writes a piece back out as the WAV file a worker is sent.

use std::ops::Range;

/// 16 kHz mono signed 16-bit samples: what whisper works at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pcm {
    pub samples: Vec<i16>,
}

/// Size of the canonical WAV header [`Pcm::wav`] writes: RIFF, `fmt ` (16 bytes) and `data`.
pub const WAV_HEADER_BYTES: usize = 44;

impl Pcm {
    /// Samples per second.
    pub const RATE: u32 = 16_000;

    /// Duration in seconds.
    pub fn seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(Self::RATE)
    }

    /// Bytes of the WAV file `write_wav` writes for `range`.
    pub fn wav_len(range: &Range<usize>) -> usize {
        WAV_HEADER_BYTES + range.len() * 2
    }

    /// Appends to `wav` a WAV file (44-byte header + data) of `samples[range]`: what a worker
    /// is sent, written straight into the request body.
    ///
    /// Panics when `range` is out of bounds, as slicing does: the caller cuts the ranges.
    pub fn write_wav(&self, range: Range<usize>, wav: &mut Vec<u8>) {
        let samples = &self.samples[range];
        // A RIFF size is 32 bits; 16 kHz mono 16-bit reaches it after 37 hours, far past any
        // piece a worker is sent. Saturate rather than wrap, should it ever happen.
        let data_len = u32::try_from(samples.len() * 2).unwrap_or(u32::MAX - 36);
        wav.reserve(WAV_HEADER_BYTES + samples.len() * 2);
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&(36 + data_len).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes()); // fmt chunk size
        wav.extend_from_slice(&1u16.to_le_bytes()); // WAVE_FORMAT_PCM
        wav.extend_from_slice(&1u16.to_le_bytes()); // mono
        wav.extend_from_slice(&Self::RATE.to_le_bytes());
        wav.extend_from_slice(&(Self::RATE * 2).to_le_bytes()); // byte rate
        wav.extend_from_slice(&2u16.to_le_bytes()); // block align
        wav.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&data_len.to_le_bytes());
        // Sized first and filled in place: a loop the compiler vectorizes, where pushing two
        // bytes per sample cost a dozen instructions each.
        let data_starts = wav.len();
        wav.resize(data_starts + samples.len() * 2, 0);
        for (bytes, sample) in wav[data_starts..].chunks_exact_mut(2).zip(samples) {
            bytes.copy_from_slice(&sample.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `write_wav` into a buffer of its own.
    fn wav(pcm: &Pcm, range: Range<usize>) -> Vec<u8> {
        let mut wav = Vec::new();
        pcm.write_wav(range, &mut wav);
        wav
    }

    #[test]
    fn seconds_counts_samples_at_16_khz() {
        assert_eq!(Pcm::default().seconds(), 0.0);
        let pcm = Pcm {
            samples: vec![0; 24_000],
        };
        assert_eq!(pcm.seconds(), 1.5);
    }

    #[test]
    fn wav_of_a_range_is_a_canonical_16_khz_mono_file() {
        let pcm = Pcm {
            samples: (0..100).map(|i| i * 300 - 15_000).collect(),
        };
        let file = wav(&pcm, 10..30);
        assert_eq!(file.len(), Pcm::wav_len(&(10..30)));
        assert_eq!(file.len(), WAV_HEADER_BYTES + 40);
        assert_eq!(&file[..4], b"RIFF");
        assert_eq!(u32::from_le_bytes(file[4..8].try_into().unwrap()), 36 + 40);
        assert_eq!(
            super::super::sniff(&file),
            Some(super::super::Container::Wav)
        );
        assert_eq!(
            super::super::wav_duration_secs(&file),
            Some(20.0 / 16_000.0)
        );
        let back = super::super::wav::decode(&file, 10.0).unwrap();
        assert_eq!(back.samples, pcm.samples[10..30]);
        assert_eq!(wav(&pcm, 0..0).len(), WAV_HEADER_BYTES);
    }

    #[test]
    #[should_panic]
    fn wav_of_a_range_past_the_end_panics() {
        let pcm = Pcm {
            samples: vec![0; 4],
        };
        wav(&pcm, 2..5);
    }
}
