//! The settings parser on arbitrary JSON5 text: no panic, and every refusal says what is wrong.
#![no_main]

use std::path::Path;

use inference_server_manager::settings::parse_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut warnings = Vec::new();
    if let Err(e) = parse_file(text, Path::new("fuzz.json5"), &mut warnings) {
        assert!(!e.message.is_empty());
    }
});
