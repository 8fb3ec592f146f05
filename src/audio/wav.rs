//! RIFF/WAVE decoding in the manager, without ffmpeg: any rate and channel count, integer PCM
//! of 8 to 32 bits or IEEE float of 32/64 bits, `WAVE_FORMAT_EXTENSIBLE` included, to
//! [`Pcm`] (16 kHz mono 16-bit).
//!
//! Channels are averaged. Rates other than 16 kHz go through a windowed-sinc resampler
//! (polyphase, Kaiser window): the low-pass that resampling needs comes with the interpolation,
//! so a tone above 8 kHz in a 44.1 or 48 kHz recording is removed instead of folding back into
//! the speech band as nearest-neighbour or linear interpolation would let it. Its numbers:
//!
//! - cutoff at 90 % of the lower Nyquist frequency (7.2 kHz when going down to 16 kHz), where
//!   the response is -6 dB; flat (within 0.1 dB) to about 6.4 kHz, at least 80 dB down from
//!   8 kHz on, so nothing above 8 kHz aliases audibly. Speech carries little above 7 kHz and
//!   whisper's mel filters end at 8 kHz, so nothing it uses is lost.
//! - 24 zero crossings of the sinc on each side (Kaiser beta 8): about 150 taps at 44.1 kHz.
//!   Each output sample is a dot product of contiguous input and a precomputed phase of the
//!   kernel, so the cost is roughly 10 multiply-adds per input sample.
//! - one kernel phase per distinct fractional position (the rate ratio reduced by its gcd:
//!   160 phases for 44.1 kHz, 1 for 48 kHz), at most [`MAX_PHASES`]; odd rates beyond that
//!   round the position to 1/[`MAX_PHASES`] of an input sample, far below audibility.
//!
//! A file that is already 16 kHz mono 16-bit is copied, not resampled. A truncated `data`
//! chunk (a recording cut off mid-upload, or a streaming writer's size of 0 or 0xFFFFFFFF)
//! decodes the whole frames that are there.

use std::fmt;

use super::pcm::Pcm;

/// Why a WAV file cannot be decoded: a client's mistake, for a 400.
#[derive(Debug, Clone, PartialEq)]
pub enum WavError {
    /// The bytes do not start with a RIFF/WAVE header.
    NotWav,
    /// The header is there but a chunk is wrong; says which and how.
    Malformed(&'static str),
    /// An encoding other than integer PCM or IEEE float (ADPCM, mu-law, MP3 in WAV, ...).
    Unsupported { format: u16, bits: u16 },
    /// No `data` chunk.
    NoData,
    /// Longer than the caller's limit; `seconds` is the file's length.
    TooLong { seconds: f64, limit: f64 },
}

impl fmt::Display for WavError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WavError::NotWav => write!(f, "not a WAV file (no RIFF/WAVE header)"),
            WavError::Malformed(why) => write!(f, "malformed WAV file: {why}"),
            WavError::Unsupported { format, bits } => write!(
                f,
                "WAV encoding {} ({bits} bits a sample) is not supported: integer PCM of 8 to 32 \
                 bits and 32/64-bit float are",
                format_name(*format)
            ),
            WavError::NoData => write!(f, "the WAV file has no data chunk"),
            WavError::TooLong { seconds, limit } => write!(
                f,
                "the audio is {seconds:.1} s long, more than the limit of {limit} s"
            ),
        }
    }
}

impl std::error::Error for WavError {}

fn format_name(format: u16) -> String {
    match format {
        FORMAT_PCM => "PCM".into(),
        FORMAT_FLOAT => "IEEE float".into(),
        0x0002 => "MS ADPCM".into(),
        0x0006 => "A-law".into(),
        0x0007 => "mu-law".into(),
        0x0011 => "IMA ADPCM".into(),
        0x0031 => "GSM 6.10".into(),
        0x0055 => "MP3".into(),
        FORMAT_EXTENSIBLE => "WAVE_FORMAT_EXTENSIBLE with an unknown subformat".into(),
        other => format!("0x{other:04X}"),
    }
}

/// Sample rates accepted, in Hz.
const MIN_RATE: u32 = 1_000;
const MAX_RATE: u32 = 768_000;

const FORMAT_PCM: u16 = 0x0001;
const FORMAT_FLOAT: u16 = 0x0003;
const FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// Bytes 2..16 of the `KSDATAFORMAT_SUBTYPE_*` GUIDs; bytes 0..2 hold the format code.
const SUBTYPE_GUID_TAIL: [u8; 14] = [
    0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xAA, 0x00, 0x38, 0x9B, 0x71,
];

/// How one sample is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl Encoding {
    fn bytes(self) -> usize {
        match self {
            Encoding::U8 => 1,
            Encoding::I16 => 2,
            Encoding::I24 => 3,
            Encoding::I32 | Encoding::F32 => 4,
            Encoding::F64 => 8,
        }
    }
}

/// What the `fmt ` chunk says.
#[derive(Debug, Clone, Copy)]
struct Format {
    encoding: Encoding,
    channels: usize,
    rate: u32,
}

/// The length of a RIFF/WAVE file's audio in seconds, from its header: what [`decode`] would
/// make of it, known before it is decoded.
pub fn seconds(bytes: &[u8]) -> Result<f64, WavError> {
    let (format, data) = parse(bytes)?;
    let frames = data.len() / (format.channels * format.encoding.bytes());
    Ok(frames as f64 / f64::from(format.rate))
}

/// Decodes a RIFF/WAVE file to [`Pcm`]: channels averaged, resampled to 16 kHz with a
/// windowed-sinc filter (see the module comment). Refuses audio longer than `max_seconds`
/// before decoding it.
pub fn decode(bytes: &[u8], max_seconds: f64) -> Result<Pcm, WavError> {
    let (format, data) = parse(bytes)?;
    let frame_bytes = format.channels * format.encoding.bytes();
    let frames = data.len() / frame_bytes;
    let data = &data[..frames * frame_bytes];
    let seconds = frames as f64 / f64::from(format.rate);
    if seconds > max_seconds {
        return Err(WavError::TooLong {
            seconds,
            limit: max_seconds,
        });
    }
    let samples = if format.rate == Pcm::RATE {
        if format.channels == 1 && format.encoding == Encoding::I16 {
            // Filled in place, a loop the compiler vectorizes (collecting from the iterator
            // took seven instructions a sample).
            let mut samples = vec![0; frames];
            for (sample, bytes) in samples.iter_mut().zip(data.chunks_exact(2)) {
                *sample = i16::from_le_bytes([bytes[0], bytes[1]]);
            }
            samples
        } else {
            let mut mono = vec![0.0; frames];
            mix(&format, data, 0, &mut mono);
            mono.into_iter().map(to_i16).collect()
        }
    } else {
        let resampler = Resampler::new(format.rate, Pcm::RATE);
        resampler.run(frames, |first, out| mix(&format, data, first, out))
    };
    Ok(Pcm { samples })
}

/// Finds the `fmt ` and `data` chunks. The data slice stops at the end of the input when the
/// chunk claims more.
fn parse(bytes: &[u8]) -> Result<(Format, &[u8]), WavError> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(WavError::NotWav);
    }
    let mut format = None;
    let mut data = None;
    let mut at = 12usize;
    while at + 8 <= bytes.len() && (format.is_none() || data.is_none()) {
        let id = &bytes[at..at + 4];
        let size = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]])
            as usize;
        let body = at + 8;
        let end = body.saturating_add(size).min(bytes.len());
        match id {
            b"fmt " => format = Some(parse_format(&bytes[body..end])?),
            b"data" if data.is_none() => data = Some(&bytes[body..end]),
            _ => {}
        }
        // Chunks are padded to an even size.
        at = body.saturating_add(size).saturating_add(size & 1);
    }
    let format = format.ok_or(WavError::Malformed(
        "no fmt chunk before the end of the file",
    ))?;
    let data = data.ok_or(WavError::NoData)?;
    Ok((format, data))
}

fn parse_format(fmt: &[u8]) -> Result<Format, WavError> {
    if fmt.len() < 16 {
        return Err(WavError::Malformed(
            "the fmt chunk is shorter than 16 bytes",
        ));
    }
    let u16_at = |i: usize| u16::from_le_bytes([fmt[i], fmt[i + 1]]);
    let mut format = u16_at(0);
    let channels = usize::from(u16_at(2));
    let rate = u32::from_le_bytes([fmt[4], fmt[5], fmt[6], fmt[7]]);
    let block_align = usize::from(u16_at(12));
    let bits = u16_at(14);
    if format == FORMAT_EXTENSIBLE {
        if fmt.len() < 40 {
            return Err(WavError::Malformed(
                "WAVE_FORMAT_EXTENSIBLE with a fmt chunk shorter than 40 bytes",
            ));
        }
        if fmt[26..40] != SUBTYPE_GUID_TAIL {
            return Err(WavError::Unsupported { format, bits });
        }
        // wBitsPerSample is the container size here; the valid bits are left-justified in it,
        // so reading the whole container is right whatever wValidBitsPerSample says.
        format = u16_at(24);
    }
    // Integer PCM of a width that is not a whole number of bytes (12, 20 bits) sits
    // left-justified in the next whole byte count.
    let container = bits.div_ceil(8);
    let encoding = match (format, container) {
        (FORMAT_PCM, 1) => Encoding::U8,
        (FORMAT_PCM, 2) => Encoding::I16,
        (FORMAT_PCM, 3) => Encoding::I24,
        (FORMAT_PCM, 4) => Encoding::I32,
        (FORMAT_FLOAT, 4) if bits == 32 => Encoding::F32,
        (FORMAT_FLOAT, 8) if bits == 64 => Encoding::F64,
        _ => return Err(WavError::Unsupported { format, bits }),
    };
    if channels == 0 {
        return Err(WavError::Malformed("the fmt chunk says 0 channels"));
    }
    // Outside this, a header is lying or the file is not speech; a rate of gigahertz would
    // also make the resampler's kernel millions of taps long.
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(WavError::Malformed(
            "the sample rate is outside 1 kHz to 768 kHz",
        ));
    }
    if block_align != channels * encoding.bytes() {
        return Err(WavError::Malformed(
            "the block alignment is not channels times bytes a sample",
        ));
    }
    Ok(Format {
        encoding,
        channels,
        rate,
    })
}

/// Writes the channel average of frames `first .. first + out.len()` into `out`, at 16-bit
/// scale (full scale is +-32768); frames outside the data are silence.
fn mix(format: &Format, data: &[u8], first: i64, out: &mut [f32]) {
    let frame_bytes = format.channels * format.encoding.bytes();
    let frames = (data.len() / frame_bytes) as i64;
    out.fill(0.0);
    let from = first.clamp(0, frames);
    let to = (first + out.len() as i64).clamp(0, frames);
    if from >= to {
        return;
    }
    let dst = &mut out[(from - first) as usize..(to - first) as usize];
    let src = &data[from as usize * frame_bytes..to as usize * frame_bytes];
    let scale = 1.0 / format.channels as f32;
    match format.encoding {
        Encoding::U8 => mix_with(src, dst, format.channels, 1, scale, |b| {
            (f32::from(b[0]) - 128.0) * 256.0
        }),
        Encoding::I16 => mix_with(src, dst, format.channels, 2, scale, |b| {
            f32::from(i16::from_le_bytes([b[0], b[1]]))
        }),
        Encoding::I24 => mix_with(src, dst, format.channels, 3, scale, |b| {
            (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 256.0
        }),
        Encoding::I32 => mix_with(src, dst, format.channels, 4, scale, |b| {
            i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 65_536.0
        }),
        Encoding::F32 => mix_with(src, dst, format.channels, 4, scale, |b| {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * 32_768.0
        }),
        Encoding::F64 => mix_with(src, dst, format.channels, 8, scale, |b| {
            (f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) * 32_768.0) as f32
        }),
    }
}

/// The loop of [`mix`], monomorphised for each encoding's `read`.
fn mix_with(
    src: &[u8],
    dst: &mut [f32],
    channels: usize,
    width: usize,
    scale: f32,
    read: impl Fn(&[u8]) -> f32,
) {
    if channels == 1 {
        for (out, b) in dst.iter_mut().zip(src.chunks_exact(width)) {
            *out = read(b);
        }
    } else {
        for (out, frame) in dst.iter_mut().zip(src.chunks_exact(width * channels)) {
            let sum: f32 = frame.chunks_exact(width).map(&read).sum();
            *out = sum * scale;
        }
    }
}

/// Rounds to the nearest 16-bit sample, clipping what is out of range (a float file may hold
/// values past full scale; the filter's ripple may overshoot a full-scale square wave).
fn to_i16(x: f32) -> i16 {
    x.round().clamp(-32_768.0, 32_767.0) as i16
}

/// Zero crossings of the windowed sinc on each side of its centre.
const ZERO_CROSSINGS: f64 = 24.0;
/// Cutoff as a fraction of the lower of the two Nyquist frequencies.
const CUTOFF: f64 = 0.9;
/// Kaiser window shape: about 80 dB of stopband attenuation.
const KAISER_BETA: f64 = 8.0;
/// Most kernel phases kept (each is one row of about 150 floats at 44.1 kHz).
pub const MAX_PHASES: u64 = 4096;
/// Output samples computed per block (bounds the mixed-input buffer to about 2.5 s).
const BLOCK: usize = 1 << 14;

/// A polyphase windowed-sinc resampler from one fixed rate to another.
struct Resampler {
    /// Output samples per `down` input samples (the ratio reduced by its gcd).
    up: u64,
    down: u64,
    /// Kernel phases in `table` (`up`, or [`MAX_PHASES`] when `up` is larger).
    phases: u64,
    /// Taps each side of the centre: the kernel spans `1 - half ..= half` around the input
    /// sample at or before an output's position.
    half: usize,
    /// Taps a row: `2 * half`, rounded up to a multiple of 8 for the dot product.
    taps: usize,
    /// `phases` rows of `taps` coefficients; each row sums to 1 (exact gain at DC).
    table: Vec<f32>,
}

impl Resampler {
    fn new(from: u32, to: u32) -> Resampler {
        let g = gcd(u64::from(from), u64::from(to));
        let (up, down) = (u64::from(to) / g, u64::from(from) / g);
        let phases = up.min(MAX_PHASES);
        // Cutoff in cycles per input sample, and the kernel's half width in input samples.
        let ratio = (f64::from(to) / f64::from(from)).min(1.0);
        let cutoff = CUTOFF * ratio / 2.0;
        let width = ZERO_CROSSINGS / (2.0 * cutoff);
        let half = width.ceil() as usize;
        let taps = (2 * half).div_ceil(8) * 8;
        let norm = bessel_i0(KAISER_BETA);
        let mut table = Vec::with_capacity(phases as usize * taps);
        for phase in 0..phases {
            let frac = phase as f64 / phases as f64;
            let row: Vec<f64> = (0..taps)
                .map(|j| {
                    // Distance from the output position to input sample `i - half + 1 + j`.
                    let u = frac + half as f64 - 1.0 - j as f64;
                    if j >= 2 * half || u.abs() >= width {
                        return 0.0;
                    }
                    let x = u / width;
                    let window = bessel_i0(KAISER_BETA * (1.0 - x * x).sqrt()) / norm;
                    2.0 * cutoff * sinc(2.0 * cutoff * u) * window
                })
                .collect();
            let sum: f64 = row.iter().sum();
            table.extend(row.iter().map(|c| (c / sum) as f32));
        }
        Resampler {
            up,
            down,
            phases,
            half,
            taps,
            table,
        }
    }

    /// Output samples for `frames` input samples: the same duration, rounded up.
    fn output_len(&self, frames: usize) -> usize {
        (frames as u64 * self.up).div_ceil(self.down) as usize
    }

    /// Resamples `frames` input samples, which `fill(first, buf)` provides on demand (input
    /// samples `first .. first + buf.len()`, silence outside `0..frames`).
    fn run(&self, frames: usize, mut fill: impl FnMut(i64, &mut [f32])) -> Vec<i16> {
        let total = self.output_len(frames);
        let mut out = Vec::with_capacity(total);
        let mut buf = Vec::new();
        let mut n0 = 0;
        while n0 < total {
            let n1 = (n0 + BLOCK).min(total);
            let first_in = (n0 as u64 * self.down / self.up) as i64 - self.half as i64 + 1;
            let last_in = ((n1 - 1) as u64 * self.down / self.up) as i64 - self.half as i64 + 1;
            buf.resize((last_in - first_in) as usize + self.taps, 0.0);
            fill(first_in, &mut buf);
            for n in n0..n1 {
                let position = n as u64 * self.down;
                let i = (position / self.up) as i64;
                let phase = (position % self.up) * self.phases / self.up;
                let start = (i - self.half as i64 + 1 - first_in) as usize;
                let row = phase as usize * self.taps;
                out.push(to_i16(dot(
                    &buf[start..start + self.taps],
                    &self.table[row..row + self.taps],
                )));
            }
            n0 = n1;
        }
        out
    }
}

/// Dot product of equal slices whose length is a multiple of 8, in eight independent sums so
/// the compiler can vectorise it (a single running sum would pin the order of the additions).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    acc.iter().sum()
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = std::f64::consts::PI * x;
        px.sin() / px
    }
}

/// The modified Bessel function of the first kind, order 0, by its power series.
fn bessel_i0(x: f64) -> f64 {
    let (mut sum, mut term, mut k) = (1.0, 1.0, 1.0);
    let q = x * x / 4.0;
    while term > sum * 1e-16 {
        term *= q / (k * k);
        sum += term;
        k += 1.0;
    }
    sum
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::f64::consts::PI;

    /// How a test WAV stores its samples.
    #[derive(Clone, Copy)]
    pub enum Store {
        U8,
        I16,
        I24,
        I32,
        F32,
        F64,
    }

    /// A WAV file of `channels` x `frames` samples at `rate`, sample values in -1..1 from
    /// `signal(frame, channel)`; `extensible` writes a WAVE_FORMAT_EXTENSIBLE fmt chunk.
    pub fn wav_file(
        rate: u32,
        channels: u16,
        frames: usize,
        store: Store,
        extensible: bool,
        signal: impl Fn(usize, usize) -> f64,
    ) -> Vec<u8> {
        let (tag, bits): (u16, u16) = match store {
            Store::U8 => (1, 8),
            Store::I16 => (1, 16),
            Store::I24 => (1, 24),
            Store::I32 => (1, 32),
            Store::F32 => (3, 32),
            Store::F64 => (3, 64),
        };
        let block = channels * bits / 8;
        let mut data = Vec::with_capacity(frames * usize::from(block));
        for f in 0..frames {
            for c in 0..usize::from(channels) {
                let x = signal(f, c).clamp(-1.0, 1.0);
                match store {
                    Store::U8 => data.push((x * 127.0 + 128.0).round() as u8),
                    Store::I16 => {
                        data.extend_from_slice(&((x * 32_767.0).round() as i16).to_le_bytes())
                    }
                    Store::I24 => data
                        .extend_from_slice(&((x * 8_388_607.0).round() as i32).to_le_bytes()[..3]),
                    Store::I32 => data
                        .extend_from_slice(&((x * 2_147_483_647.0).round() as i32).to_le_bytes()),
                    Store::F32 => data.extend_from_slice(&(x as f32).to_le_bytes()),
                    Store::F64 => data.extend_from_slice(&x.to_le_bytes()),
                }
            }
        }
        let mut fmt = Vec::new();
        fmt.extend_from_slice(&(if extensible { FORMAT_EXTENSIBLE } else { tag }).to_le_bytes());
        fmt.extend_from_slice(&channels.to_le_bytes());
        fmt.extend_from_slice(&rate.to_le_bytes());
        fmt.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        fmt.extend_from_slice(&block.to_le_bytes());
        fmt.extend_from_slice(&bits.to_le_bytes());
        if extensible {
            fmt.extend_from_slice(&22u16.to_le_bytes()); // cbSize
            fmt.extend_from_slice(&bits.to_le_bytes()); // valid bits
            fmt.extend_from_slice(&0u32.to_le_bytes()); // channel mask
            fmt.extend_from_slice(&tag.to_le_bytes());
            fmt.extend_from_slice(&SUBTYPE_GUID_TAIL);
        }
        let mut wav = Vec::with_capacity(data.len() + 80);
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&((4 + 8 + fmt.len() + 8 + data.len()) as u32).to_le_bytes());
        wav.extend_from_slice(b"WAVE");
        // A chunk a decoder must skip, with an odd size (padded).
        wav.extend_from_slice(b"JUNK\x03\0\0\0abc\0");
        wav.extend_from_slice(b"fmt ");
        wav.extend_from_slice(&(fmt.len() as u32).to_le_bytes());
        wav.extend_from_slice(&fmt);
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
        wav.extend_from_slice(&data);
        wav
    }

    pub fn tone(hz: f64, rate: u32, amplitude: f64) -> impl Fn(usize, usize) -> f64 {
        move |f, _| amplitude * (2.0 * PI * hz * f as f64 / f64::from(rate)).sin()
    }

    /// RMS of the samples, on a -1..1 scale.
    pub fn rms(samples: &[i16]) -> f64 {
        let sum: f64 = samples
            .iter()
            .map(|&s| (f64::from(s) / 32_768.0).powi(2))
            .sum();
        (sum / samples.len() as f64).sqrt()
    }

    /// Frequency from the count of upward zero crossings over the samples.
    pub fn frequency(samples: &[i16]) -> f64 {
        let ups = samples.windows(2).filter(|w| w[0] < 0 && w[1] >= 0).count();
        ups as f64 * f64::from(Pcm::RATE) / samples.len() as f64
    }

    /// The middle of the signal, away from the filter's edges.
    fn middle(samples: &[i16]) -> &[i16] {
        &samples[samples.len() / 10..samples.len() * 9 / 10]
    }

    #[test]
    fn every_sample_format_decodes_to_the_same_tone() {
        let formats = [
            (Store::U8, false, 0.02),
            (Store::I16, false, 0.001),
            (Store::I24, false, 0.001),
            (Store::I32, false, 0.001),
            (Store::F32, false, 0.001),
            (Store::F64, false, 0.001),
            (Store::I16, true, 0.001),
            (Store::I24, true, 0.001),
            (Store::F32, true, 0.001),
        ];
        for (store, extensible, tolerance) in formats {
            let wav = wav_file(
                16_000,
                1,
                16_000,
                store,
                extensible,
                tone(500.0, 16_000, 0.5),
            );
            let pcm = decode(&wav, 60.0).unwrap();
            assert_eq!(pcm.samples.len(), 16_000);
            let expected: Vec<i16> = (0..16_000)
                .map(|f| (tone(500.0, 16_000, 0.5)(f, 0) * 32_768.0).round() as i16)
                .collect();
            let worst = pcm
                .samples
                .iter()
                .zip(&expected)
                .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs() / 32_768.0)
                .fold(0.0, f64::max);
            assert!(worst <= tolerance, "{worst} off at extensible={extensible}");
        }
    }

    #[test]
    fn sixteen_khz_mono_16_bit_is_copied_exactly() {
        let wav = wav_file(16_000, 1, 1000, Store::I16, false, |f, _| {
            ((f * 7919) % 2001) as f64 / 1000.0 - 1.0
        });
        let pcm = decode(&wav, 60.0).unwrap();
        let data = &wav[wav.len() - 2000..];
        let copied: Vec<i16> = data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(pcm.samples, copied);
    }

    #[test]
    fn stereo_channels_are_averaged() {
        // Left carries the tone, right its opposite plus a constant: the average is the constant.
        let wav = wav_file(16_000, 2, 1600, Store::I16, false, |f, c| {
            let t = tone(300.0, 16_000, 0.4)(f, 0);
            if c == 0 {
                t
            } else {
                0.5 - t
            }
        });
        let pcm = decode(&wav, 60.0).unwrap();
        assert!(pcm
            .samples
            .iter()
            .all(|&s| (i32::from(s) - 8192).abs() <= 1));
    }

    #[test]
    fn a_1_khz_tone_from_44_1_khz_stereo_keeps_its_frequency_and_amplitude() {
        let wav = wav_file(
            44_100,
            2,
            44_100 * 2,
            Store::I16,
            false,
            tone(1000.0, 44_100, 0.5),
        );
        let pcm = decode(&wav, 60.0).unwrap();
        assert_eq!(pcm.samples.len(), 32_000, "2 s at 16 kHz");
        let mid = middle(&pcm.samples);
        let hz = frequency(mid);
        assert!((hz / 1000.0 - 1.0).abs() < 0.002, "frequency {hz}");
        let rms = rms(mid);
        let expected = 0.5 / 2f64.sqrt();
        assert!(
            (rms / expected - 1.0).abs() < 0.01,
            "rms {rms}, expected {expected}"
        );
    }

    #[test]
    fn eight_khz_is_upsampled_keeping_duration_and_pitch() {
        let wav = wav_file(
            8_000,
            1,
            8_000 * 3 / 2,
            Store::I16,
            false,
            tone(440.0, 8_000, 0.3),
        );
        let pcm = decode(&wav, 60.0).unwrap();
        assert_eq!(pcm.samples.len(), 24_000);
        let mid = middle(&pcm.samples);
        let hz = frequency(mid);
        assert!((hz / 440.0 - 1.0).abs() < 0.005, "{hz}");
        assert!((rms(mid) / (0.3 / 2f64.sqrt()) - 1.0).abs() < 0.01);
    }

    #[test]
    fn odd_rates_resample_to_the_right_length_and_pitch() {
        // 22050 (320/441), 11025, and 44 101 / 7 919 whose reduced ratios exceed MAX_PHASES.
        for rate in [22_050u32, 11_025, 44_101, 7_919] {
            let wav = wav_file(
                rate,
                1,
                rate as usize,
                Store::F32,
                false,
                tone(700.0, rate, 0.5),
            );
            let pcm = decode(&wav, 60.0).unwrap();
            assert_eq!(pcm.samples.len(), 16_000, "{rate}");
            let mid = middle(&pcm.samples);
            let hz = frequency(mid);
            assert!((hz / 700.0 - 1.0).abs() < 0.005, "{rate}: {hz}");
            assert!(
                (rms(mid) / (0.5 / 2f64.sqrt()) - 1.0).abs() < 0.01,
                "{rate}"
            );
        }
    }

    /// The level, relative to the input's, of a 0.9 tone at `hz` in 48 kHz float WAV once
    /// decoded to 16 kHz, measured away from the edges.
    fn level_of_48_khz_tone(hz: f64) -> f64 {
        let wav = wav_file(48_000, 1, 48_000, Store::F32, false, tone(hz, 48_000, 0.9));
        let pcm = decode(&wav, 60.0).unwrap();
        assert_eq!(pcm.samples.len(), 16_000);
        let level = rms(middle(&pcm.samples)) / (0.9 / 2f64.sqrt());
        println!("{hz} Hz from 48 kHz: {:.2} dB", 20.0 * level.log10());
        level
    }

    #[test]
    fn a_12_khz_tone_from_48_khz_is_filtered_out_not_aliased() {
        // Sampled at 16 kHz without a low-pass, 12 kHz would fold to 4 kHz at full level.
        let level = level_of_48_khz_tone(12_000.0);
        assert!(
            level < 1e-3,
            "12 kHz came through at {:.1} dB",
            20.0 * level.log10()
        );
        // And just above the new Nyquist frequency, 8.5 kHz, is gone too; 5 kHz passes.
        let level = level_of_48_khz_tone(8_500.0);
        assert!(
            level < 1e-3,
            "8.5 kHz came through at {:.1} dB",
            20.0 * level.log10()
        );
        let level = level_of_48_khz_tone(5_000.0);
        assert!((level - 1.0).abs() < 0.01, "5 kHz passed at {level}");
    }

    #[test]
    fn a_truncated_data_chunk_decodes_the_whole_frames_there() {
        let mut wav = wav_file(
            16_000,
            2,
            16_000,
            Store::I16,
            false,
            tone(440.0, 16_000, 0.5),
        );
        wav.truncate(wav.len() - 4 * 4000 - 3); // 4000 frames and 3 bytes of one missing
        let pcm = decode(&wav, 60.0).unwrap();
        assert_eq!(pcm.samples.len(), 16_000 - 4001);
        // A streaming writer's data size of 0xFFFFFFFF is the same case.
        let mut wav = wav_file(
            44_100,
            1,
            44_100,
            Store::I16,
            false,
            tone(440.0, 44_100, 0.5),
        );
        let at = wav.len() - 44_100 * 2 - 4;
        wav[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&wav, 60.0).unwrap().samples.len(), 16_000);
    }

    #[test]
    fn too_long_is_refused_with_the_length() {
        let wav = wav_file(8_000, 1, 8_000 * 5, Store::U8, false, |_, _| 0.0);
        assert_eq!(
            decode(&wav, 4.5),
            Err(WavError::TooLong {
                seconds: 5.0,
                limit: 4.5
            })
        );
        assert_eq!(decode(&wav, 5.0).unwrap().seconds(), 5.0);
        let message = decode(&wav, 4.5).unwrap_err().to_string();
        assert!(
            message.contains("5.0 s") && message.contains("4.5 s"),
            "{message}"
        );
    }

    #[test]
    fn junk_and_broken_files_are_typed_errors() {
        assert_eq!(decode(b"", 60.0), Err(WavError::NotWav));
        assert_eq!(
            decode(b"hello, this is not audio at all", 60.0),
            Err(WavError::NotWav)
        );
        assert_eq!(decode(b"RIFF\0\0\0\0AVI LIST", 60.0), Err(WavError::NotWav));
        assert_eq!(
            decode(b"RIFF\0\0\0\0WAVE", 60.0),
            Err(WavError::Malformed(
                "no fmt chunk before the end of the file"
            ))
        );

        let good = wav_file(16_000, 1, 100, Store::I16, false, |_, _| 0.0);
        let fmt_at = good.windows(4).position(|w| w == b"fmt ").unwrap();
        let data_at = good.windows(4).position(|w| w == b"data").unwrap();

        let mut no_data = good.clone();
        no_data[data_at..data_at + 4].copy_from_slice(b"junk");
        assert_eq!(decode(&no_data, 60.0), Err(WavError::NoData));

        let mut adpcm = good.clone();
        adpcm[fmt_at + 8..fmt_at + 10].copy_from_slice(&0x11u16.to_le_bytes());
        let err = decode(&adpcm, 60.0).unwrap_err();
        assert_eq!(
            err,
            WavError::Unsupported {
                format: 0x11,
                bits: 16
            }
        );
        assert!(err.to_string().contains("IMA ADPCM"), "{err}");

        let mut zero_channels = good.clone();
        zero_channels[fmt_at + 10..fmt_at + 12].copy_from_slice(&0u16.to_le_bytes());
        assert!(matches!(
            decode(&zero_channels, 60.0),
            Err(WavError::Malformed(_))
        ));

        for rate in [0u32, 999, 768_001, u32::MAX] {
            let mut odd_rate = good.clone();
            odd_rate[fmt_at + 12..fmt_at + 16].copy_from_slice(&rate.to_le_bytes());
            assert!(
                matches!(decode(&odd_rate, 60.0), Err(WavError::Malformed(_))),
                "{rate}"
            );
        }
        for rate in [1_000u32, 768_000] {
            let mut edge_rate = good.clone();
            edge_rate[fmt_at + 12..fmt_at + 16].copy_from_slice(&rate.to_le_bytes());
            assert!(decode(&edge_rate, 60.0).is_ok(), "{rate}");
        }

        let mut bad_align = good.clone();
        bad_align[fmt_at + 20..fmt_at + 22].copy_from_slice(&3u16.to_le_bytes());
        assert!(matches!(
            decode(&bad_align, 60.0),
            Err(WavError::Malformed(_))
        ));

        let mut float16 = good.clone();
        float16[fmt_at + 8..fmt_at + 10].copy_from_slice(&3u16.to_le_bytes());
        assert_eq!(
            decode(&float16, 60.0),
            Err(WavError::Unsupported {
                format: 3,
                bits: 16
            })
        );

        let mut unknown_subformat = wav_file(16_000, 1, 100, Store::I16, true, |_, _| 0.0);
        let guid_at = unknown_subformat
            .windows(4)
            .position(|w| w == b"data")
            .unwrap()
            - 14;
        unknown_subformat[guid_at] ^= 0xFF;
        assert!(matches!(
            decode(&unknown_subformat, 60.0),
            Err(WavError::Unsupported {
                format: FORMAT_EXTENSIBLE,
                ..
            })
        ));

        let mut short_fmt = good.clone();
        short_fmt[fmt_at + 4..fmt_at + 8].copy_from_slice(&12u32.to_le_bytes());
        assert!(matches!(
            decode(&short_fmt, 60.0),
            Err(WavError::Malformed(_))
        ));

        // Cut anywhere before the data chunk's header is complete: an error, never a panic.
        for cut in 0..data_at + 8 {
            assert!(decode(&good[..cut], 60.0).is_err(), "cut at {cut}");
        }
        // Empty data is zero samples, not an error: what to do with it is the caller's call.
        assert_eq!(decode(&good[..data_at + 8], 60.0).unwrap().samples.len(), 0);
    }

    /// The kernel's gain at `hz` for an input at `from`, in dB: the least and the most over
    /// its phases.
    fn gain_db(r: &Resampler, from: u32, hz: f64) -> (f64, f64) {
        let w = 2.0 * PI * hz / f64::from(from);
        let (mut least, mut most) = (f64::INFINITY, f64::NEG_INFINITY);
        for row in r.table.chunks_exact(r.taps) {
            let (re, im) = row
                .iter()
                .enumerate()
                .fold((0.0, 0.0), |(re, im), (j, &c)| {
                    let phase = w * j as f64;
                    (
                        re + f64::from(c) * phase.cos(),
                        im - f64::from(c) * phase.sin(),
                    )
                });
            let db = 10.0 * (re * re + im * im).log10();
            least = least.min(db);
            most = most.max(db);
        }
        (least, most)
    }

    #[test]
    fn the_kernel_passes_speech_and_stops_what_would_alias() {
        for from in [44_100u32, 48_000, 96_000, 22_050] {
            let r = Resampler::new(from, 16_000);
            let mut line = format!("{from} Hz ({} taps, {} phases):", r.taps, r.phases);
            for hz in [
                1_000.0, 4_000.0, 6_000.0, 6_400.0, 7_200.0, 8_000.0, 8_500.0, 10_000.0,
            ] {
                let (least, most) = gain_db(&r, from, hz);
                line.push_str(&format!(" {:.1}k {least:.2}..{most:.2} dB;", hz / 1000.0));
                if hz <= 6_400.0 {
                    assert!(
                        least > -0.1 && most < 0.1,
                        "{from}: {hz} Hz at {least}..{most} dB"
                    );
                }
                if hz >= 8_000.0 {
                    assert!(most < -80.0, "{from}: {hz} Hz at {most} dB");
                }
            }
            println!("{line}");
        }
    }

    #[test]
    fn resampler_phases_sum_to_one_and_output_lengths_round_up() {
        for rate in [8_000u32, 44_100, 48_000, 96_000, 7_919] {
            let r = Resampler::new(rate, 16_000);
            for row in r.table.chunks_exact(r.taps) {
                let sum: f32 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "{rate}: {sum}");
            }
        }
        let r = Resampler::new(44_100, 16_000);
        assert_eq!((r.up, r.down, r.phases), (160, 441, 160));
        assert_eq!(r.output_len(44_100), 16_000);
        assert_eq!(r.output_len(1), 1);
        assert_eq!(r.output_len(0), 0);
        assert_eq!(Resampler::new(7_919, 16_000).phases, MAX_PHASES);
    }

    /// `cargo test --release --lib wav::tests::decode_speed -- --ignored --nocapture`
    ///
    /// An unoptimised build is some 60 times slower (100 s for the hour): there it measures
    /// 6 minutes and says so, so that `cargo test -- --include-ignored` stays quick.
    #[test]
    #[ignore = "benchmark: builds 1 hour of 44.1 kHz stereo WAV (635 MB) and prints the decode speed"]
    fn decode_speed_of_an_hour_of_44_1_khz_stereo() {
        let seconds = if cfg!(debug_assertions) { 360 } else { 3600 };
        let frames = 44_100 * seconds;
        let started = std::time::Instant::now();
        let wav = wav_file(44_100, 2, frames, Store::I16, false, |f, c| {
            0.3 * ((f as f64 * (0.0627 + c as f64 * 0.01)).sin())
        });
        let built = started.elapsed();
        let started = std::time::Instant::now();
        let pcm = decode(&wav, 4.0 * 3600.0).unwrap();
        let took = started.elapsed();
        assert_eq!(pcm.samples.len(), 16_000 * seconds);
        println!(
            "wav::decode: {} min of 44.1 kHz stereo 16-bit ({} MB) to 16 kHz mono in {:.2} s \
             ({:.0}x real time; building the input took {:.1} s; {} build)",
            seconds / 60,
            wav.len() / 1_000_000,
            took.as_secs_f64(),
            seconds as f64 / took.as_secs_f64(),
            built.as_secs_f64(),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        );
    }
}
