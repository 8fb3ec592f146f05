//! `scripts/ct2-to-ggml.py` refuses what is not a CTranslate2 Whisper model, or weights that do
//! not fit the header they are meant for, and writes nothing when it does. (The real
//! conversions are checked by `scripts/setup-whisper.sh` against recorded checksums, and by
//! the real-whisper tests transcribing with its output.)

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

/// A CTranslate2 Whisper model.bin holding float16 zeros of the given shapes, and no aliases.
fn ct2_whisper(variables: &[(&str, &[u32])]) -> Vec<u8> {
    let mut data = ct2_file("WhisperSpec");
    data.truncate(data.len() - 8);
    data.extend_from_slice(&(variables.len() as u32).to_le_bytes());
    for (name, dims) in variables {
        data.extend_from_slice(&(name.len() as u16 + 1).to_le_bytes());
        data.extend_from_slice(name.as_bytes());
        data.push(0);
        data.push(dims.len() as u8);
        for d in *dims {
            data.extend_from_slice(&d.to_le_bytes());
        }
        data.push(4); // float16
        let bytes = 2 * dims.iter().product::<u32>();
        data.extend_from_slice(&bytes.to_le_bytes());
        data.resize(data.len() + bytes as usize, 0);
    }
    data.extend_from_slice(&0u32.to_le_bytes()); // no aliases
    data
}

/// tiny.en's hyper-parameters: n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
/// n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels, ftype.
const TINY_EN: [i32; 11] = [51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80, 1];

/// A ggml header with no tensors, like whisper.cpp's for-tests files.
fn ggml_header(hparams: [i32; 11]) -> Vec<u8> {
    let mut data = 0x6767_6d6cu32.to_le_bytes().to_vec();
    for v in hparams.into_iter().chain([1, 1]) {
        data.extend_from_slice(&v.to_le_bytes()); // hparams, then a 1x1 mel filter
    }
    data.extend_from_slice(&0f32.to_le_bytes());
    data.extend_from_slice(&0i32.to_le_bytes()); // empty vocabulary
    data
}

fn convert(model: &[u8], dir: &Path) -> (i32, String) {
    convert_for(model, TINY_EN, dir)
}

fn convert_for(model: &[u8], hparams: [i32; 11], dir: &Path) -> (i32, String) {
    std::fs::write(dir.join("model.bin"), model).unwrap();
    std::fs::write(dir.join("header.bin"), ggml_header(hparams)).unwrap();
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
    let (code, err) = convert(&ggml_header(TINY_EN), &dir.0);
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

#[test]
fn the_converter_refuses_weights_that_do_not_fit_the_header() {
    let dir = TempDir::new("convert-shapes");
    // A model in miniature: vocabulary 5, width 4, contexts 3 and 2, one head, one layer, 2 mels.
    let header = [5, 3, 4, 1, 1, 2, 4, 1, 1, 2, 1];
    let mut variables: Vec<(&str, &[u32])> = vec![
        ("encoder/conv1/weight", &[4, 2, 3]),
        ("encoder/conv2/weight", &[4, 4, 3]),
        ("encoder/position_encodings/encodings", &[3, 4]),
        ("decoder/embeddings/weight", &[6, 4]),
        ("decoder/position_encodings/encodings", &[2, 4]),
    ];
    // One token more than the header: a multilingual model against an English-only header.
    let (code, err) = convert_for(&ct2_whisper(&variables), header, &dir.0);
    assert_eq!(code, 1);
    assert!(
        err.contains("decoder/embeddings/weight is [6, 4]; the header wants [5, 4]")
            && err.contains("multilingual"),
        "{err}"
    );
    variables[3].1 = &[5, 4];
    let (code, err) = convert_for(&ct2_whisper(&variables), header, &dir.0);
    assert_eq!(code, 1);
    assert!(
        err.contains("the encoder has 0 layers; the header wants 1"),
        "{err}"
    );
}
