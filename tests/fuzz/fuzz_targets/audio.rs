//! Audio sniffing, lenient base64 and WAV header reading on arbitrary bytes: no panic, and a
//! duration is always a finite, non-negative number.
#![no_main]

use inference_server_manager::audio;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = audio::sniff(data);
    if let Some(seconds) = audio::wav_duration_secs(data) {
        assert!(seconds.is_finite() && seconds >= 0.0, "{seconds}");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok((bytes, _)) = audio::decode_audio(text) {
            assert!(audio::sniff(&bytes).is_some(), "decode_audio returned something that is not audio");
        }
    }
});
