//! The seed API stays compatible: the original service's documented shapes
//! (`tests/contract/seed-shapes.json`) are checked against live answers, field by field, so a
//! field that disappears or changes JSON type (a number becoming `null`, say) fails here.
//! Fields the manager adds are allowed.

mod support;

use serde_json::{json, Value};
use support::*;

const SHAPES: &str = include_str!("contract/seed-shapes.json");

/// Every place where `value` does not have `shape`, as `path: why`.
fn mismatches(path: &str, shape: &Value, value: &Value, found: &mut Vec<String>) {
    match shape {
        Value::String(kind) => {
            let ok = match kind.as_str() {
                "string" => value.is_string(),
                "number" => value.is_number(),
                "integer" => value.is_u64() || value.is_i64(),
                "boolean" => value.is_boolean(),
                "null" => value.is_null(),
                "object" => value.is_object(),
                other => panic!("{path}: unknown type `{other}` in the shapes file"),
            };
            if !ok {
                found.push(format!("{path}: expected {kind}, got {value}"));
            }
        }
        Value::Array(item) => match value.as_array() {
            None => found.push(format!("{path}: expected an array, got {value}")),
            Some(items) if items.is_empty() => {
                found.push(format!("{path}: empty, so its items cannot be checked"))
            }
            Some(items) => {
                for (i, v) in items.iter().enumerate() {
                    mismatches(&format!("{path}[{i}]"), &item[0], v, found);
                }
            }
        },
        Value::Object(fields) => {
            for (key, field_shape) in fields.iter().filter(|(k, _)| !k.starts_with("//")) {
                match value.get(key) {
                    None => found.push(format!("{path}.{key}: missing")),
                    Some(v) => mismatches(&format!("{path}.{key}"), field_shape, v, found),
                }
            }
        }
        other => panic!("{path}: bad shape {other}"),
    }
}

fn assert_shape(route: &str, value: &Value) {
    let shapes: Value = serde_json::from_str(SHAPES).expect("the shapes file is JSON");
    let mut found = Vec::new();
    mismatches(route, &shapes[route], value, &mut found);
    assert!(found.is_empty(), "{}\n{value:#}", found.join("\n"));
}

#[test]
fn the_seed_routes_keep_every_documented_field_and_type() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let audio = b64(&wav(16_000, 3));
    for body in [
        json!({ "content": audio }),
        json!({ "content": audio, "language": "auto", "timestamps": true }),
        json!({ "content": audio, "language": "en", "timestamps": true, "metadata": { "k": "v" } }),
    ] {
        let reply = manager.post_json("/api/v1/transcriptions", &body);
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_shape("POST /api/v1/transcriptions", &reply.json());
    }
    // Without timestamps `segments` is empty, but every other field keeps its type: the
    // original answered a number for `confidence` here too.
    let plain = manager.post_json(
        "/api/v1/transcriptions",
        &json!({ "content": audio, "timestamps": false }),
    );
    let mut result = plain.json();
    assert_eq!(result["result"]["segments"], json!([]));
    result["result"]["segments"] =
        json!([{ "start": 0.0, "end": 1.0, "text": "", "confidence": 1.0, "speaker": null }]);
    assert_shape("POST /api/v1/transcriptions", &result);
    assert_eq!(
        plain.json()["result"]["language"],
        "en",
        "a code, never null"
    );
    for route in ["GET /health", "GET /api/v1/status", "GET /api/v1/providers"] {
        let path = route.split_once(' ').unwrap().1;
        assert_shape(route, &manager.get(path).json());
    }
}

#[test]
fn without_ffmpeg_the_providers_list_what_workers_decode() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let providers = manager.get("/api/v1/providers").json();
    let formats = &providers["providers"][0]["capabilities"]["supportedFormats"];
    assert_eq!(formats, &json!(["wav", "mp3", "flac", "ogg"]));
    // Without ffmpeg these go whole to a worker, which decodes them itself.
    for (format, magic) in [
        ("mp3", &b"ID3\x04\0\0\0\0\0\0"[..]),
        ("flac", b"fLaC\0\0\0\x22"),
        ("ogg", b"OggS\0\x02"),
    ] {
        let mut audio = magic.to_vec();
        audio.resize(2_000, 0);
        let reply = manager.post_json("/api/v1/transcriptions", &json!({ "content": b64(&audio) }));
        assert_eq!(reply.status, 200, "{format} is accepted: {}", reply.text());
    }
}

#[test]
#[ignore = "needs ffmpeg (apt-get install ffmpeg)"]
fn with_ffmpeg_every_listed_format_is_transcribed() {
    needs::program("ffmpeg", "apt-get install ffmpeg");
    let manager = Setup::new()
        .with_ffmpeg()
        .stub(&["--words-from-pcm"])
        .start();
    manager.wait_healthy(2);
    let providers = manager.get("/api/v1/providers").json();
    let formats: Vec<String> = providers["providers"][0]["capabilities"]["supportedFormats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    assert!(formats.len() > 4, "{formats:?}");
    let scratch = TempDir::new("formats");
    let source = scratch.0.join("source.wav");
    // Two bursts of a 440 Hz tone with a pause: the stub hears two words.
    let ok = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:duration=1.5,volume=enable='between(t,0.6,0.9)':volume=0")
        .args(["-ar", "16000", "-ac", "1"])
        .arg(&source)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    for format in &formats {
        let file = scratch.0.join(format!("tone.{format}"));
        let encoded = match format.as_str() {
            "wav" => std::fs::copy(&source, &file).is_ok(),
            "opus" | "webm" => ffmpeg_to(&source, &file, &["-c:a", "libopus"]),
            "m4a" | "mp4" | "aac" => ffmpeg_to(&source, &file, &["-c:a", "aac"]),
            "ogg" => ffmpeg_to(&source, &file, &["-c:a", "libvorbis"]),
            _ => ffmpeg_to(&source, &file, &[]),
        };
        assert!(encoded, "ffmpeg could not make {format}");
        let reply = manager.post_json(
            "/api/v1/transcriptions",
            &json!({ "content": b64(&std::fs::read(&file).unwrap()) }),
        );
        assert_eq!(reply.status, 200, "{format}: {}", reply.text());
        let result = &reply.json()["result"];
        assert_eq!(
            result["text"].as_str().unwrap().split_whitespace().count(),
            2,
            "{format}: both bursts arrived: {result}"
        );
        // Encoders pad a little (AAC primes ~0.05-0.1 s).
        assert!(
            (result["duration"].as_f64().unwrap() - 1.5).abs() < 0.15,
            "{format}: {result}"
        );
    }
}

fn ffmpeg_to(source: &std::path::Path, file: &std::path::Path, codec: &[&str]) -> bool {
    std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-i"])
        .arg(source)
        .args(codec)
        .arg(file)
        .status()
        .is_ok_and(|s| s.success())
}
