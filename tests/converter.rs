//! `scripts/ct2-to-ggml.py` refuses what is not a CTranslate2 Whisper model, and writes
//! nothing when it does. (The real conversion is checked by `scripts/setup-whisper.sh`
//! against a recorded checksum, and by the real-whisper tests transcribing with its output.)

mod support;

use std::path::Path;
use std::process::Command;

use support::TempDir;

const CONVERTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ct2-to-ggml.py");

/// A CTranslate2 model.bin with the given spec name and no variables.
fn ct2_file(spec: &str) -> Vec<u8> {
    let mut data = 6u32.to_le_bytes().to_vec();
    data.extend_from_slice(&(spec.len() as u16 + 1).to_le_bytes());
    data.extend_from_slice(spec.as_bytes());
    data.push(0);
    data.extend_from_slice(&1u32.to_le_bytes()); // revision
    data.extend_from_slice(&0u32.to_le_bytes()); // no variables
    data.extend_from_slice(&0u32.to_le_bytes()); // no aliases
    data
}

/// A ggml header with no tensors, like whisper.cpp's for-tests files.
fn ggml_header() -> Vec<u8> {
    let mut data = 0x6767_6d6cu32.to_le_bytes().to_vec();
    for v in [51864i32, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1, 1, 1] {
        data.extend_from_slice(&v.to_le_bytes()); // hparams, then a 1x1 mel filter
    }
    data.extend_from_slice(&0f32.to_le_bytes());
    data.extend_from_slice(&0i32.to_le_bytes()); // empty vocabulary
    data
}

fn convert(model: &[u8], dir: &Path) -> (i32, String) {
    std::fs::write(dir.join("model.bin"), model).unwrap();
    std::fs::write(dir.join("header.bin"), ggml_header()).unwrap();
    let output = Command::new("python3")
        .arg(CONVERTER)
        .args([
            dir.join("model.bin"),
            dir.join("header.bin"),
            dir.join("out.bin"),
        ])
        .output()
        .expect("python3 runs the converter");
    assert!(
        !dir.join("out.bin").exists(),
        "nothing is written on failure"
    );
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn the_converter_refuses_what_is_not_a_ctranslate2_whisper_model() {
    let dir = TempDir::new("convert");
    let (code, err) = convert(b"RIFF....WAVEfmt junk", &dir.0);
    assert_eq!(code, 1);
    assert!(err.contains("not a CTranslate2 model"), "{err}");
    let (code, err) = convert(&ggml_header(), &dir.0);
    assert_eq!(code, 1, "a ggml file is not a CTranslate2 one");
    assert!(err.contains("not a CTranslate2 model"), "{err}");
    let (code, err) = convert(&ct2_file("TransformerSpec"), &dir.0);
    assert_eq!(code, 1);
    assert!(err.contains("not a Whisper model"), "{err}");
    let (code, err) = convert(&ct2_file("WhisperSpec"), &dir.0);
    assert_eq!(code, 1);
    assert!(
        err.contains("has no variable encoder/conv1/weight"),
        "{err}"
    );
    let (code, err) = convert(&ct2_file("WhisperSpec")[..9], &dir.0);
    assert_eq!(code, 1);
    assert!(
        err.contains("truncated") || err.contains("not a CTranslate2"),
        "{err}"
    );
}
