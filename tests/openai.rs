//! The OpenAI-compatible routes and `/metrics`, through the binary and stub workers; and the
//! official OpenAI Python SDK with prometheus_client's parser, an ignored test (it needs
//! `pip install openai prometheus_client`, which `.ci/run` does).

mod support;

use serde_json::{json, Value};
use support::*;

/// A multipart body with the given text fields and the audio as `file`.
fn form(audio: &[u8], fields: &[(&str, &str)]) -> Vec<u8> {
    Form::new().texts(fields).file("a.wav", audio).finish()
}

fn upload(manager: &Manager, body: Vec<u8>, extra: &[(&str, &str)]) -> Reply {
    upload_to(manager, "/v1/audio/transcriptions", body, extra)
}

fn upload_to(manager: &Manager, path: &str, body: Vec<u8>, extra: &[(&str, &str)]) -> Reply {
    let content_type = form_content_type();
    let mut headers = vec![("Content-Type", content_type.as_str())];
    headers.extend_from_slice(extra);
    request("POST", &manager.url(path), &headers, Some(body))
}

/// Asserts OpenAI's error shape and returns (code, param).
fn openai_error(reply: &Reply) -> (String, Value) {
    let body = reply.json();
    let error = &body["error"];
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(error["type"].is_string(), "{body}");
    (
        error["code"].as_str().unwrap().to_string(),
        error["param"].clone(),
    )
}

#[test]
fn every_response_format_comes_back_with_its_content_type() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let audio = wav(16_000, 4);
    let expected = stub_text(&audio);
    let cases = [
        ("json", "application/json"),
        ("text", "text/plain; charset=utf-8"),
        ("srt", "application/x-subrip; charset=utf-8"),
        ("vtt", "text/vtt; charset=utf-8"),
        ("verbose_json", "application/json"),
    ];
    for (format, content_type) in cases {
        let reply = upload(
            &manager,
            form(
                &audio,
                &[("model", "whisper-1"), ("response_format", format)],
            ),
            &[],
        );
        assert_eq!(reply.status, 200, "{format}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some(content_type), "{format}");
        match format {
            "json" => assert_eq!(reply.json(), json!({ "text": expected })),
            "verbose_json" => {
                let body = reply.json();
                assert_eq!(body["text"], expected);
                assert_eq!(body["duration"], 1.0);
                assert!(body["segments"][0]["end"].is_f64());
            }
            "text" => assert_eq!(reply.text().trim(), expected),
            // The stub speaks its four words in segments of three, over the 1 s of audio.
            "srt" => assert!(
                reply
                    .text()
                    .starts_with("1\n00:00:00,000 --> 00:00:00,750\nstub ")
                    && reply
                        .text()
                        .contains("\n\n2\n00:00:00,750 --> 00:00:01,000\n"),
                "{}",
                reply.text()
            ),
            _ => assert!(
                reply
                    .text()
                    .starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:00.750\nstub "),
                "{}",
                reply.text()
            ),
        }
    }
    // Defaults: no model and no format is json from the served model.
    let plain = upload(&manager, form(&audio, &[]), &[]);
    assert_eq!(plain.json(), json!({ "text": expected }));
    // The form reached the worker as a form: language and format went through.
    let sent = upload(
        &manager,
        form(
            &audio,
            &[("language", "de"), ("response_format", "verbose_json")],
        ),
        &[],
    );
    assert_eq!(
        sent.json()["language"],
        "german",
        "OpenAI names the language"
    );
}

#[test]
fn bad_uploads_get_openai_errors_naming_the_field() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let audio = wav(1000, 1);
    let not_multipart = request(
        "POST",
        &manager.url("/v1/audio/transcriptions"),
        &[("Content-Type", "application/json")],
        Some(b"{}".to_vec()),
    );
    assert_eq!(not_multipart.status, 400);
    assert_eq!(openai_error(&not_multipart).0, "invalid_request");
    let cases: Vec<(Vec<u8>, u16, &str, Value)> = vec![
        (form(b"", &[]), 400, "invalid_request", json!("file")),
        (
            form(b"plain text", &[]),
            400,
            "invalid_request",
            json!("file"),
        ),
        (
            form(&audio, &[("response_format", "xml")]),
            400,
            "invalid_request",
            json!("response_format"),
        ),
        (
            form(&audio, &[("temperature", "warm")]),
            400,
            "invalid_request",
            json!("temperature"),
        ),
        (
            form(&audio, &[("language", "en; rm -rf /")]),
            400,
            "invalid_request",
            json!("language"),
        ),
        (
            form(&audio, &[("model", "gpt-9-transcribe")]),
            404,
            "model_not_found",
            json!("model"),
        ),
        (
            form(
                &audio,
                &[
                    ("response_format", "text"),
                    ("timestamp_granularities[]", "word"),
                ],
            ),
            400,
            "invalid_request",
            json!("timestamp_granularities[]"),
        ),
        (
            form(
                &audio,
                &[("response_format", "srt"), ("include[]", "logprobs")],
            ),
            400,
            "invalid_request",
            json!("include[]"),
        ),
        (
            form(&audio, &[("prompt", &"p".repeat(5000))]),
            400,
            "invalid_request",
            json!("prompt"),
        ),
        (
            form(&audio, &[("model", "../../etc/passwd")]),
            404,
            "model_not_found",
            json!("model"),
        ),
        (
            b"--nope\r\njunk".to_vec(),
            400,
            "invalid_request",
            Value::Null,
        ),
        (
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nRIFF")
                .into_bytes(),
            400,
            "invalid_request",
            Value::Null,
        ),
    ];
    for (body, status, code, param) in cases {
        let reply = upload(&manager, body, &[]);
        assert_eq!(reply.status, status, "{}", reply.text());
        assert_eq!(openai_error(&reply), (code.to_string(), param));
    }
    assert_eq!(
        upload(&manager, form(&audio, &[]), &[]).status,
        200,
        "still serving"
    );
}

#[test]
fn oversized_uploads_and_bad_keys_get_openai_errors_too() {
    let manager = Setup::new()
        .set("server", "maxBodyBytes", json!(20_000))
        .env("INFERENCE_SERVER_API_KEYS", "sk-test")
        .start();
    manager.wait_healthy_with_key(2, "sk-test");
    let auth = [("Authorization", "Bearer sk-test")];
    let too_big = upload(&manager, form(&wav(20_000, 1), &[]), &auth);
    assert_eq!(too_big.status, 413);
    assert_eq!(openai_error(&too_big).0, "payload_too_large");
    assert_eq!(
        too_big.json()["error"]["message"],
        "Maximum content size limit (20000) exceeded",
        "OpenAI's wording"
    );
    let no_key = upload(&manager, form(&wav(100, 1), &[]), &[]);
    assert_eq!(no_key.status, 401);
    assert_eq!(openai_error(&no_key).0, "invalid_api_key");
    assert_eq!(upload(&manager, form(&wav(100, 1), &[]), &auth).status, 200);
    let models = request("GET", &manager.url("/v1/models"), &auth, None).json();
    assert_eq!(models["object"], "list");
    let ids = model_ids(&models);
    assert_eq!(
        ids,
        [
            "default",
            "whisper-1",
            "gpt-4o-transcribe",
            "gpt-4o-mini-transcribe",
            "gpt-transcribe"
        ]
    );
    assert_eq!(models["data"][0]["object"], "model");
    assert_eq!(
        manager.get("/metrics").status,
        401,
        "metrics need the key like the rest"
    );
}

#[test]
fn words_segments_and_logprobs_come_in_openai_shapes() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let audio = wav(16_000, 5);
    let both = upload(
        &manager,
        form(
            &audio,
            &[
                ("response_format", "verbose_json"),
                ("timestamp_granularities[]", "word"),
                ("timestamp_granularities[]", "segment"),
            ],
        ),
        &[],
    )
    .json();
    assert_eq!(
        (both["task"].as_str(), both["language"].as_str()),
        (Some("transcribe"), Some("english"))
    );
    let words: Vec<&str> = both["words"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["word"].as_str().unwrap())
        .collect();
    assert_eq!(words.join(" "), stub_text(&audio), "every word, in order");
    assert_eq!(both["words"][3]["end"], 1.0);
    for segment in both["segments"].as_array().unwrap() {
        for key in [
            "id",
            "seek",
            "start",
            "end",
            "text",
            "tokens",
            "temperature",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
        ] {
            assert!(segment.get(key).is_some(), "{key} in {segment}");
        }
    }
    let words_only = upload(
        &manager,
        form(
            &audio,
            &[
                ("response_format", "verbose_json"),
                ("timestamp_granularities[]", "word"),
            ],
        ),
        &[],
    )
    .json();
    assert!(words_only.get("segments").is_none() && words_only["words"].is_array());
    let logprobs = upload(&manager, form(&audio, &[("include[]", "logprobs")]), &[]).json();
    let tokens = logprobs["logprobs"].as_array().unwrap();
    assert_eq!(tokens.len(), 4);
    assert!((tokens[0]["logprob"].as_f64().unwrap() - 0.9f64.ln()).abs() < 1e-6);
    assert_eq!(tokens[0]["bytes"], json!(b" stub"));
}

#[test]
fn translations_need_a_multilingual_model() {
    let manager = Setup::new()
        .set("models", "base", json!({ "path": "models/ggml-base.bin" }))
        .set(
            "models",
            "tiny",
            json!({ "path": "models/ggml-tiny.en.bin" }),
        )
        .set_top("defaultModel", json!("base"))
        .set("inference", "autoLoad", json!(true))
        .start();
    manager.wait_healthy(2);
    let audio = wav(8_000, 6);
    let translated = upload_to(
        &manager,
        "/v1/audio/translations",
        form(&audio, &[("response_format", "verbose_json")]),
        &[],
    );
    assert_eq!(translated.status, 200, "{}", translated.text());
    let body = translated.json();
    assert_eq!(body["task"], "translate");
    assert_eq!(
        body["text"],
        format!("english: [ggml-base.bin] {}", stub_text(&audio))
    );
    manager.wait_worker_logs("translate=true");
    let refused = upload_to(
        &manager,
        "/v1/audio/translations",
        form(&audio, &[("model", "tiny")]),
        &[],
    );
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("English-only"));
}

#[test]
fn aliases_name_models_and_are_listed() {
    let manager = Setup::new()
        .set(
            "models",
            "base",
            json!({ "path": "models/base.bin", "aliases": ["whisper-1", "house-model"] }),
        )
        .set("inference", "autoLoad", json!(true))
        .start();
    manager.wait_healthy(2);
    let audio = wav(4_000, 7);
    for alias in ["whisper-1", "house-model"] {
        let reply = upload(&manager, form(&audio, &[("model", alias)]), &[]);
        assert_eq!(
            reply.json()["text"],
            model_text("base", &audio),
            "{alias} is base"
        );
    }
    let reply = upload(
        &manager,
        form(&audio, &[("model", "gpt-4o-transcribe")]),
        &[],
    );
    assert_eq!(
        reply.json()["text"],
        stub_text(&audio),
        "the built-in aliases still mean the default model"
    );
    let retrieved = manager.get("/v1/models/house-model").json();
    assert_eq!(
        (retrieved["id"].as_str(), retrieved["object"].as_str()),
        (Some("house-model"), Some("model"))
    );
    let listed = manager.get("/v1/models").json();
    let ids = model_ids(&listed);
    assert_eq!(
        ids,
        [
            "base",
            "whisper-1",
            "house-model",
            "default",
            "gpt-4o-transcribe",
            "gpt-4o-mini-transcribe",
            "gpt-transcribe"
        ]
    );
    let missing = manager.get("/v1/models/nope");
    assert_eq!(
        (missing.status, openai_error(&missing).0),
        (404, "model_not_found".to_string())
    );
}

/// `name{labels} value` lines, with `# HELP`/`# TYPE` before each family.
fn parse_metrics(page: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    let mut typed = std::collections::HashSet::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split(' ');
            typed.insert(words.next().unwrap().to_string());
            assert!(
                matches!(words.next(), Some("counter" | "gauge" | "histogram")),
                "{line}"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(
            typed.contains(name) || typed.contains(family),
            "{name} has no # TYPE"
        );
        samples.push((
            series.to_string(),
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line:?}")),
        ));
    }
    samples
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map_or(0.0, |(_, v)| *v)
}

#[test]
fn metrics_parse_and_move_with_traffic() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let page = manager.get("/metrics");
    assert_eq!(
        page.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let before = parse_metrics(&page.text());
    for i in 0..3 {
        assert_eq!(manager.transcribe(&wav(500, i)).status, 200);
    }
    assert_eq!(manager.get("/no/such/route").status, 404);
    let after = parse_metrics(&manager.get("/metrics").text());
    let ok = "ism_http_requests_total{route=\"/api/v1/transcriptions\",status=\"200\"}";
    assert_eq!(value(&after, ok) - value(&before, ok), 3.0);
    assert!(
        value(
            &after,
            "ism_http_requests_total{route=\"unmatched\",status=\"404\"}"
        ) >= 1.0
    );
    let inferences = "ism_inference_duration_seconds_count{model=\"default\"}";
    assert_eq!(value(&after, inferences) - value(&before, inferences), 3.0);
    assert_eq!(value(&after, "ism_workers{state=\"healthy\"}"), 2.0);
    assert_eq!(value(&after, "ism_queue_depth"), 0.0);
    assert!(
        !manager.get("/metrics").text().contains("no/such/route"),
        "request paths never become labels"
    );
}

#[test]
#[ignore = "needs the Python packages openai and prometheus_client (pip install openai prometheus_client)"]
fn the_openai_python_sdk_works_unchanged() {
    needs::python_modules(
        &["openai", "prometheus_client"],
        "pip install openai prometheus_client",
    );
    let manager = Setup::new()
        .env("INFERENCE_SERVER_API_KEYS", "sk-sdk")
        .set("server", "maxBodyBytes", json!(200_000))
        .start();
    manager.wait_healthy_with_key(2, "sk-sdk");
    let scratch = TempDir::new("sdk");
    let audio = wav(16_000, 8);
    let audio_path = scratch.0.join("speech.wav");
    std::fs::write(&audio_path, &audio).unwrap();
    run_client(
        "openai_sdk.py",
        [
            manager.url(""),
            "sk-sdk".into(),
            audio_path.to_str().unwrap().into(),
            stub_text(&audio),
            // The stub marks what it was asked to translate.
            format!("english: {}", stub_text(&audio)),
            "200000".into(),
        ],
    )
    .unwrap_or_else(|failure| panic!("{failure}"));
}

/// The ids of a `GET /v1/models` answer, in its order.
fn model_ids(list: &Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect()
}
