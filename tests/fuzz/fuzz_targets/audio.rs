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
        // Lenient base64 (data: URLs, line breaks, missing padding) on any text: no panic.
        if let Ok(bytes) = audio::decode_base64(text) {
            assert!(!bytes.is_empty(), "decode_base64 returned no bytes without an error");
        }
    }
});
