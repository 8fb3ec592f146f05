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
fn the_providers_list_what_the_service_really_accepts() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let providers = manager.get("/api/v1/providers").json();
    let formats = &providers["providers"][0]["capabilities"]["supportedFormats"];
    assert_eq!(formats, &json!(["wav", "mp3", "flac", "ogg"]));
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
