//! Audio arriving as base64 in JSON: decoding it leniently (data: URL prefix, whitespace, with
//! or without padding) and recognising the container from its first bytes, so that junk is a
//! 400 here instead of a confusing failure inside whisper-server.
//!
//! Decoding any upload to 16 kHz mono PCM: [`pcm`] (the result), [`wav`] (WAV in the manager)
//! and [`ffmpeg`] (everything else, through an `ffmpeg` child process, with `mp4` moving an
//! MP4's index to the front first); [`sniff_kind`] names what arrived, for messages. [`chunk`]
//! cuts a long recording at its pauses; [`budget`] bounds the decoded audio held at once.

mod b64;
pub mod budget;
pub mod chunk;
pub mod ffmpeg;
mod mp4;
pub mod pcm;
pub mod wav;

use std::borrow::Cow;

/// The audio containers whisper-server's decoder (miniaudio) reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Wav,
    Mp3,
    Flac,
    Ogg,
}

impl Container {
    pub const ALL: [Container; 4] = [
        Container::Wav,
        Container::Mp3,
        Container::Flac,
        Container::Ogg,
    ];

    /// The format's usual name (and file extension).
    pub fn name(self) -> &'static str {
        match self {
            Container::Wav => "wav",
            Container::Mp3 => "mp3",
            Container::Flac => "flac",
            Container::Ogg => "ogg",
        }
    }

    /// A file name for the multipart part; whisper-server ignores it but logs it.
    pub fn file_name(self) -> String {
        format!("audio.{}", self.name())
    }
}

/// Decodes `content` as base64 audio. Returns a client-facing reason on failure.
pub fn decode_base64(content: &str) -> Result<Vec<u8>, String> {
    let payload = strip_data_url(content).as_bytes();
    // The common case in one pass: nothing to drop, nothing wrong. (A text that ends in a
    // line break, as `base64` writes it, would be decoded in vain before it got there.)
    if !payload.last().is_some_and(u8::is_ascii_whitespace) {
        if let Some(audio) = b64::decode_valid(payload).filter(|audio| !audio.is_empty()) {
            return Ok(audio);
        }
    }
    // A recording is tens of megabytes of base64: copied only when it has line breaks to drop.
    let compact: Cow<[u8]> = if has_whitespace(payload) {
        let mut compact = Vec::with_capacity(payload.len());
        compact.extend(payload.iter().filter(|b| !b.is_ascii_whitespace()));
        Cow::Owned(compact)
    } else {
        Cow::Borrowed(payload)
    };
    if compact.is_empty() {
        return Err("`content` is empty".into());
    }
    b64::decode(&compact).map_err(|e| format!("`content` is not valid base64 ({e})"))
}

/// Whether `bytes` hold ASCII whitespace. Each block of 32 bytes is tested whole, with no
/// early exit, which the compiler turns into vector compares: `iter().any` took six
/// instructions a byte, over every byte of a recording's base64.
fn has_whitespace(bytes: &[u8]) -> bool {
    bytes.chunks(32).any(|block| {
        block
            .iter()
            .fold(false, |seen, b| seen | b.is_ascii_whitespace())
    })
}

/// `data:audio/wav;base64,AAAA` -> `AAAA`; anything else unchanged.
fn strip_data_url(content: &str) -> &str {
    let trimmed = content.trim_start();
    if trimmed
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("data:"))
    {
        if let Some(comma) = trimmed.find(',') {
            return &trimmed[comma + 1..];
        }
    }
    content
}

/// The formats accepted when ffmpeg decodes uploads: each is checked end to end by a test
/// (`tests/contract.rs`), which makes it in that format with ffmpeg and transcribes it.
pub const WITH_FFMPEG: &[&str] = &[
    "wav", "mp3", "flac", "ogg", "opus", "m4a", "aac", "webm", "mp4", "wma",
];

/// The formats accepted without ffmpeg: WAV, read by the manager, and what whisper-server
/// decodes by itself.
pub fn without_ffmpeg() -> Vec<&'static str> {
    Container::ALL.map(Container::name).to_vec()
}

/// Recognises the container by its magic bytes.
pub fn sniff(audio: &[u8]) -> Option<Container> {
    match audio {
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => Some(Container::Wav),
        [b'f', b'L', b'a', b'C', ..] => Some(Container::Flac),
        [b'O', b'g', b'g', b'S', ..] => Some(Container::Ogg),
        [b'I', b'D', b'3', ..] => Some(Container::Mp3),
        // MPEG audio frame sync: 11 set bits, then a layer other than "reserved".
        [0xFF, second, ..] if second & 0xE0 == 0xE0 && second & 0x06 != 0 => Some(Container::Mp3),
        _ => None,
    }
}

/// Names the container the bytes look like, for messages ("got m4a; ..."): `wav`, `rf64`,
/// `mp3`, `flac`, `opus-in-ogg`, `ogg`, `webm`, `matroska`, `m4a`, `mp4`, `3gp`, `mov`,
/// `amr`, `amr-wb`, `wma/asf`, `aac`, `aiff`, `caf`, `avi`, `text` (printable UTF-8, such as
/// an HTML error page or a playlist), `empty` or `unknown`.
pub fn sniff_kind(bytes: &[u8]) -> &'static str {
    let at = |offset: usize, magic: &[u8]| bytes.get(offset..offset + magic.len()) == Some(magic);
    match bytes {
        [] => "empty",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'W', b'A', b'V', b'E', ..] => "wav",
        [b'R', b'F', b'6', b'4', ..] | [b'B', b'W', b'6', b'4', ..] => "rf64",
        [b'R', b'I', b'F', b'F', _, _, _, _, b'A', b'V', b'I', b' ', ..] => "avi",
        [b'f', b'L', b'a', b'C', ..] => "flac",
        [b'O', b'g', b'g', b'S', ..] if at(28, b"OpusHead") => "opus-in-ogg",
        [b'O', b'g', b'g', b'S', ..] => "ogg",
        [0x1A, 0x45, 0xDF, 0xA3, ..] => {
            // The EBML header's DocType says which; it sits in the first few dozen bytes.
            let head = &bytes[..bytes.len().min(64)];
            if head.windows(4).any(|w| w == b"webm") {
                "webm"
            } else {
                "matroska"
            }
        }
        _ if at(4, b"ftyp") => match bytes.get(8..11) {
            Some(b"M4A") | Some(b"M4B") | Some(b"M4P") => "m4a",
            Some(b"3gp") | Some(b"3g2") => "3gp",
            Some(b"qt ") => "mov",
            _ => "mp4",
        },
        _ if at(4, b"moov") || at(4, b"mdat") || at(4, b"wide") => "mov",
        [b'#', b'!', b'A', b'M', b'R', b'\n', ..] => "amr",
        [b'#', b'!', b'A', b'M', b'R', b'-', b'W', b'B', b'\n', ..] => "amr-wb",
        [0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11, ..] => "wma/asf",
        [b'F', b'O', b'R', b'M', _, _, _, _, b'A', b'I', b'F', b'F' | b'C', ..] => "aiff",
        [b'c', b'a', b'f', b'f', ..] => "caf",
        // ADTS: a 12-bit sync and layer 00, which MPEG audio reserves (see `sniff`).
        [0xFF, second, ..] if second & 0xF6 == 0xF0 => "aac",
        _ if sniff(bytes) == Some(Container::Mp3) => "mp3",
        _ if looks_like_text(bytes) => "text",
        _ => "unknown",
    }
}

/// The first bytes are UTF-8 without control characters other than whitespace (a character
/// cut by the 512-byte window is allowed).
fn looks_like_text(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(512)];
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(&head[..e.valid_up_to()]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t' | '\u{c}'))
}

/// Duration in seconds of a PCM WAV file, from its `fmt ` and `data` chunk headers; `None`
/// for anything it cannot read with certainty.
pub fn wav_duration_secs(wav: &[u8]) -> Option<f64> {
    let mut at = 12;
    let mut byte_rate = None;
    while at + 8 <= wav.len() {
        let id = &wav[at..at + 4];
        let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().ok()?) as usize;
        let body = at + 8;
        if id == b"fmt " && body + 12 <= wav.len() {
            byte_rate = Some(u32::from_le_bytes(
                wav[body + 8..body + 12].try_into().ok()?,
            ));
        }
        if id == b"data" {
            let rate = byte_rate.filter(|r| *r > 0)?;
            let size = size.min(wav.len() - body);
            return Some(size as f64 / f64::from(rate));
        }
        at = body.checked_add(size)?.checked_add(size & 1)?;
    }
    None
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::Engine as _;

    /// A valid mono 16 kHz 16-bit WAV of `samples` silent samples.
    pub fn silent_wav(samples: u32) -> Vec<u8> {
        let data_len = samples * 2;
        let mut wav = Vec::new();
        wav.extend_from_slice(b"RIFF");
        wav.extend_from_slice(&(36 + data_len).to_le_bytes());
        wav.extend_from_slice(b"WAVEfmt ");
        wav.extend_from_slice(&16u32.to_le_bytes());
        wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
        wav.extend_from_slice(&1u16.to_le_bytes()); // mono
        wav.extend_from_slice(&16_000u32.to_le_bytes());
        wav.extend_from_slice(&32_000u32.to_le_bytes()); // byte rate
        wav.extend_from_slice(&2u16.to_le_bytes());
        wav.extend_from_slice(&16u16.to_le_bytes());
        wav.extend_from_slice(b"data");
        wav.extend_from_slice(&data_len.to_le_bytes());
        wav.resize(wav.len() + data_len as usize, 0);
        wav
    }

    #[test]
    fn decodes_plain_padded_unpadded_and_data_url() {
        let wav = silent_wav(10);
        let b64 = b64::LENIENT.encode(&wav);
        assert_eq!(decode_base64(&b64).unwrap(), wav);
        assert_eq!(decode_base64(b64.trim_end_matches('=')).unwrap(), wav);
        assert_eq!(decode_base64(&format!("{b64}\n")).unwrap(), wav);
        let url = format!("data:audio/wav;base64,{}\n{}", &b64[..8], &b64[8..]);
        assert_eq!(decode_base64(&url).unwrap(), wav);
    }

    #[test]
    fn whitespace_is_found_in_any_block_and_the_tail() {
        let mut text = vec![b'A'; 100];
        assert!(!has_whitespace(&text));
        for at in [0, 31, 32, 63, 99] {
            let mut spaced = text.clone();
            spaced[at] = b'\n';
            assert!(has_whitespace(&spaced), "a line break at {at}");
        }
        text[70] = b' ';
        let long = b64::LENIENT.encode(silent_wav(100));
        let spaced = format!("{}\r\n{}", &long[..64], &long[64..]);
        assert_eq!(decode_base64(&spaced), decode_base64(&long));
        assert!(has_whitespace(&text));
    }

    #[test]
    fn rejects_empty_and_bad_base64() {
        assert!(decode_base64("  \n").unwrap_err().contains("empty"));
        assert!(decode_base64("!!!!").unwrap_err().contains("base64"));
    }

    #[test]
    fn sniffs_each_container() {
        assert_eq!(sniff(b"fLaC\0\0"), Some(Container::Flac));
        assert_eq!(sniff(b"OggS\0"), Some(Container::Ogg));
        assert_eq!(sniff(b"ID3\x04"), Some(Container::Mp3));
        assert_eq!(sniff(&[0xFF, 0xFB, 0x90]), Some(Container::Mp3));
        assert_eq!(
            sniff(&[0xFF, 0xE0]),
            None,
            "reserved layer is not MPEG audio"
        );
        assert_eq!(sniff(b"RIFF\0\0\0\0AVI "), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn sniff_kind_names_each_container() {
        let cases: [(&[u8], &str); 25] = [
            (b"", "empty"),
            (&silent_wav(4), "wav"),
            (b"RF64\xff\xff\xff\xffWAVEds64", "rf64"),
            (b"RIFF\0\0\0\0AVI LIST", "avi"),
            (b"fLaC\0\0\0\x22", "flac"),
            (
                b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x01\0\0\0\x01\x13OpusHead\x01",
                "opus-in-ogg",
            ),
            (
                b"OggS\0\x02\0\0\0\0\0\0\0\0\x01\0\0\0\0\0\0\0\x01\0\0\0\x01\x1e\x01vorbis",
                "ogg",
            ),
            (
                b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm\x42\x87",
                "webm",
            ),
            (
                b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska",
                "matroska",
            ),
            (b"\0\0\0\x1cftypM4A \0\0\x02\0", "m4a"),
            (b"\0\0\0\x20ftypisom\0\0\x02\0", "mp4"),
            (b"\0\0\0\x14ftyp3gp4\0\0\0\0", "3gp"),
            (b"\0\0\0\x14ftypqt  \0\0\0\0", "mov"),
            (b"\0\0\0\x08wide\0\0\0\0mdat", "mov"),
            (b"#!AMR\n\x3c", "amr"),
            (b"#!AMR-WB\n\x04", "amr-wb"),
            (b"\x30\x26\xb2\x75\x8e\x66\xcf\x11\xa6\xd9", "wma/asf"),
            (b"FORM\0\0\0\0AIFFCOMM", "aiff"),
            (b"caff\0\x01\0\0", "caf"),
            (&[0xFF, 0xF1, 0x50, 0x80], "aac"),
            (&[0xFF, 0xF9, 0x50, 0x80], "aac"),
            (&[0xFF, 0xFB, 0x90, 0x64], "mp3"),
            (b"ID3\x04\0\0", "mp3"),
            (b"#EXTM3U\n#EXTINF:10,\nfile:///etc/passwd\n", "text"),
            (&[0x00, 0x01, 0x02, 0x9F, 0xFE], "unknown"),
        ];
        for (bytes, kind) in cases {
            assert_eq!(sniff_kind(bytes), kind, "{bytes:02x?}");
        }
        assert_eq!(sniff_kind("hello, this is not audio: é".as_bytes()), "text");
        assert_eq!(sniff_kind(&"é".repeat(300).as_bytes()[..511]), "text");
    }

    #[test]
    fn wav_duration_from_headers() {
        assert_eq!(wav_duration_secs(&silent_wav(16_000)), Some(1.0));
        assert_eq!(wav_duration_secs(b"RIFF\0\0\0\0WAVE"), None);
        let mut truncated = silent_wav(16_000);
        truncated.truncate(44 + 8000);
        assert_eq!(wav_duration_secs(&truncated), Some(0.25));
    }
}
