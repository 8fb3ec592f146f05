//! The HTTP API (README "API"), black box through the binary and stub workers.

mod support;

use serde_json::{json, Value};
use support::*;

#[test]
fn port_opens_at_once_and_health_turns_healthy_when_workers_are_ready() {
    // Workers that take 1.5 s to "load their model".
    let manager = Setup::new().stub(&["--load-ms", "1500"]).start();
    let first = manager.get("/health");
    assert_eq!(first.status, 503, "{}", first.text());
    assert_eq!(first.json()["status"], "unhealthy");
    manager.wait_healthy(2);
    let health = manager.get("/health");
    assert_eq!(health.status, 200);
    let body = health.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["service"], "inference-server-manager");
    assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    assert!(body["uptime"].is_u64());
    assert_eq!(
        body["pool"],
        json!({"healthyWorkers": 2, "totalWorkers": 2})
    );
    let capacity = &body["capacity"];
    assert_eq!(capacity["available"], true);
    assert_eq!(capacity["queueDepth"], 0);
    assert_eq!(capacity["currentLoad"], 0);
    assert!(capacity["maxConcurrent"].is_u64());
    assert_eq!(capacity["availableModels"], json!(["default"]));
}

#[test]
fn health_is_degraded_when_fewer_than_half_are_healthy() {
    // One healthy worker of a pool of three is fewer than half.
    let manager = Setup::new().pool(3).start();
    manager.wait_healthy(3);
    let pids = manager.worker_pids();
    // Freeze two workers: the process stays but no longer answers its health checks, so it
    // turns unhealthy (and is replaced a moment later).
    for pid in &pids[..2] {
        signal(*pid, "STOP");
    }
    let degraded = wait_for(SOON, || {
        let reply = manager.get("/health");
        (reply.json()["status"] == "degraded").then_some(reply)
    })
    .expect("health never said degraded");
    assert_eq!(degraded.status, 200);
    assert_eq!(degraded.json()["pool"]["healthyWorkers"], 1);
}

#[test]
fn transcription_with_timestamps_has_segments_duration_and_confidence() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let audio = wav(16_000, 7);
    let reply = manager.post_json(
        "/api/v1/transcriptions",
        &json!({ "content": b64(&audio), "language": "en", "metadata": { "job": "42" } }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["success"], true);
    assert_eq!(body["message"], "Transcription completed successfully");
    let result = &body["result"];
    assert_eq!(result["text"], stub_text(&audio));
    assert_eq!(result["language"], "en");
    assert_eq!(result["duration"], 1.0);
    assert_eq!(result["provider"], "whisper-server");
    let confidence = result["confidence"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&confidence));
    let segments = result["segments"].as_array().unwrap();
    assert_eq!(segments[0]["start"].as_f64(), Some(0.0));
    assert_eq!(segments.last().unwrap()["end"].as_f64(), Some(1.0));
    let joined: Vec<&str> = segments
        .iter()
        .map(|s| s["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        joined.join(" "),
        stub_text(&audio),
        "the segments hold the whole text"
    );
    for segment in segments {
        assert!(segment["confidence"].is_f64());
        assert_eq!(segment["speaker"], Value::Null);
    }
    let metadata = &result["metadata"];
    assert_eq!(metadata["job"], "42");
    let worker_id = metadata["worker_id"].as_str().unwrap();
    assert!(worker_id.starts_with("worker-"), "{worker_id}");
    let port = worker_id.split('-').nth(1).unwrap();
    assert_eq!(metadata["worker_url"], format!("http://127.0.0.1:{port}"));
}

#[test]
fn transcription_without_timestamps_makes_the_same_worker_call() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let audio = wav(8_000, 3);
    // The Audetic desktop app's request shape.
    let reply = manager.post_json(
        "/api/v1/transcriptions",
        &json!({ "content": format!("data:audio/wav;base64,{}", b64(&audio)), "language": "en", "timestamps": false }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let result = &reply.json()["result"];
    assert_eq!(result["text"], stub_text(&audio));
    assert_eq!(result["segments"], json!([]));
    assert!(
        result["confidence"].is_f64(),
        "a number even without timestamps"
    );
    assert_eq!(result["duration"], 0.5);
    // The worker was asked for one shape whatever the request: verbose_json without the
    // language probabilities that double its cost, cut on word boundaries.
    manager.wait_worker_logs(
        "response_format=verbose_json split_on_word=true no_language_probabilities=true language=en",
    );
}

#[test]
fn prompt_temperature_and_translate_are_checked_then_sent() {
    let manager = Setup::new().start();
    manager.wait_healthy(2);
    let audio = b64(&wav(4_000, 9));
    let reply = manager.post_json(
        "/api/v1/transcriptions",
        &json!({ "content": audio, "language": "de", "prompt": "Grüße, Stella", "temperature": 0.2, "translate": true }),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let result = &reply.json()["result"];
    assert!(
        result["text"]
            .as_str()
            .unwrap()
            .starts_with("english: stub"),
        "{result}"
    );
    assert_eq!(result["language"], "de", "the language of the audio");
    manager.wait_worker_logs("language=de prompt=Grüße, Stella temperature=0.2 translate=true");
    for (body, field) in [
        (
            json!({ "content": audio, "temperature": 1.5 }),
            "temperature",
        ),
        (
            json!({ "content": audio, "language": "klingon" }),
            "language",
        ),
        (
            json!({ "content": audio, "language": "en; rm -rf /" }),
            "language",
        ),
        (
            json!({ "content": audio, "prompt": "p".repeat(5000) }),
            "prompt",
        ),
    ] {
        let reply = manager.post_json("/api/v1/transcriptions", &body);
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert!(
            reply.json()["error"].as_str().unwrap().contains(field),
            "{}",
            reply.text()
        );
    }
}

#[test]
fn the_decoder_settings_go_with_every_request() {
    let manager = Setup::new()
        .set("whisperServer", "beamSize", json!(4))
        .set("whisperServer", "bestOf", json!(3))
        .set("whisperServer", "noSpeechThreshold", json!(0.45))
        .set("whisperServer", "logprobThreshold", json!(-0.8))
        .set("whisperServer", "suppressNonSpeech", json!(true))
        .start();
    manager.wait_healthy(2);
    assert_eq!(manager.transcribe(&wav(2_000, 1)).status, 200);
    manager.wait_worker_logs(
        "entropy_thold=2.4 logprob_thold=-0.8 no_speech_thold=0.45 best_of=3 beam_size=4 suppress_nst=true",
    );
}

#[test]
fn language_detection_names_the_code_and_its_probability() {
    let manager = Setup::new()
        .stub(&["--detect", "german"])
        .set(
            "models",
            "tiny",
            json!({ "path": "models/ggml-tiny.en.bin" }),
        )
        .set("inference", "autoLoad", json!(true))
        .start();
    manager.wait_healthy(2);
    let audio = b64(&wav(8_000, 2));
    let reply = manager.post_json("/api/v1/languages/detect", &json!({ "content": audio }));
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({ "success": true, "language": "de", "probability": 0.875 })
    );
    manager.wait_worker_logs("detect_language=true");
    let english_only = manager.post_json(
        "/api/v1/languages/detect",
        &json!({ "content": audio, "model": "tiny" }),
    );
    assert_eq!(english_only.status, 400);
    assert!(english_only.json()["error"]
        .as_str()
        .unwrap()
        .contains("English-only"));
}

#[test]
fn providers_and_status_have_the_seed_shapes() {
    let manager = Setup::new()
        .set("server", "maxBodyBytes", json!(5_000_000))
        .start();
    manager.wait_healthy(2);
    let providers = manager.get("/api/v1/providers").json();
    assert_eq!(providers["success"], true);
    let provider = &providers["providers"][0];
    assert_eq!(provider["id"], "whisper-server");
    assert_eq!(provider["name"], "Whisper Server");
    assert_eq!(provider["available"], true);
    assert_eq!(provider["costPerMinute"], 0);
    assert_eq!(provider["speed"], Value::Null);
    let caps = &provider["capabilities"];
    assert_eq!(
        caps["supportedFormats"],
        json!(["wav", "mp3", "flac", "ogg"])
    );
    assert_eq!(caps["maxFileSize"], 5_000_000);
    assert_eq!(caps["wordTimestamps"], true);
    assert!(caps["languages"].as_array().unwrap().contains(&json!("en")));

    let status = manager.status();
    assert_eq!(
        (
            status["healthyWorkers"].as_u64(),
            status["totalWorkers"].as_u64()
        ),
        (Some(2), Some(2))
    );
    for worker in workers(&status) {
        for key in [
            "id",
            "port",
            "pid",
            "model",
            "state",
            "acceptingRequests",
            "inFlight",
            "requestCount",
            "consecutiveFailures",
            "restarts",
            "uptime",
        ] {
            assert!(worker.get(key).is_some(), "{key} missing in {worker}");
        }
        let id = worker["id"].as_str().unwrap();
        assert!(
            id.starts_with(&format!("worker-{}-", worker["port"])),
            "{id}"
        );
        assert_eq!(worker["state"], "healthy");
        assert_eq!(worker["acceptingRequests"], true);
    }
}

#[test]
fn index_and_openapi_describe_the_service() {
    let manager = Setup::new().start();
    let index = manager.get("/").json();
    assert_eq!(index["service"], "inference-server-manager");
    assert_eq!(index["docs"], "/openapi");
    let spec = manager.get("/openapi/json").json();
    assert_eq!(spec["openapi"], "3.1.0");
    for path in [
        "/",
        "/health",
        "/api/v1/transcriptions",
        "/api/v1/providers",
        "/api/v1/status",
        "/openapi",
        "/openapi/json",
    ] {
        assert!(spec["paths"].get(path).is_some(), "{path} undocumented");
    }
    let page = manager.get("/openapi");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.text();
    assert!(
        html.contains("/api/v1/transcriptions")
            && !html.contains("<script")
            && !html.contains("http://cdn")
    );
}

#[test]
fn every_response_carries_cors_and_a_request_id() {
    let manager = Setup::new()
        .set("server", "corsOrigin", json!("https://app.example"))
        .start();
    for reply in [
        manager.get("/health"),
        manager.get("/nope"),
        request(
            "POST",
            &manager.url("/api/v1/transcriptions"),
            &[],
            Some(b"{".to_vec()),
        ),
        request("OPTIONS", &manager.url("/api/v1/transcriptions"), &[], None),
    ] {
        assert_eq!(
            reply.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(
            reply.header("access-control-allow-methods"),
            Some("GET, POST, PUT, DELETE, OPTIONS")
        );
        assert_eq!(
            reply.header("access-control-allow-headers"),
            Some("Content-Type, Authorization")
        );
        assert!(reply
            .header("x-request-id")
            .is_some_and(|id| !id.is_empty()));
    }
    let preflight = request("OPTIONS", &manager.url("/anything/at/all"), &[], None);
    assert_eq!(preflight.status, 204);
    let echoed = request(
        "GET",
        &manager.url("/health"),
        &[("X-Request-Id", "trace-abc-123")],
        None,
    );
    assert_eq!(echoed.header("x-request-id"), Some("trace-abc-123"));
    let hostile = request(
        "GET",
        &manager.url("/health"),
        &[("X-Request-Id", &"x".repeat(500))],
        None,
    );
    assert_ne!(
        hostile.header("x-request-id"),
        Some("x".repeat(500).as_str()),
        "overlong ids are replaced"
    );
}

#[test]
fn api_keys_guard_everything_but_the_public_routes() {
    let manager = Setup::new()
        .env("INFERENCE_SERVER_API_KEYS", "k-one,k-two")
        .start();
    manager.wait_healthy_with_key(2, "k-one");
    for path in ["/health", "/", "/openapi", "/openapi/json"] {
        assert_eq!(manager.get(path).status, 200, "{path} must be public");
    }
    for path in ["/api/v1/status", "/api/v1/providers"] {
        let reply = manager.get(path);
        assert_eq!(reply.status, 401, "{path}");
        assert_eq!(reply.error_code(), "UNAUTHORIZED");
        let wrong = request(
            "GET",
            &manager.url(path),
            &[("Authorization", "Bearer k-on")],
            None,
        );
        assert_eq!(wrong.status, 401);
        let right = request(
            "GET",
            &manager.url(path),
            &[("Authorization", "Bearer k-two")],
            None,
        );
        assert_eq!(right.status, 200, "{path}");
    }
    let post = manager.post_json(
        "/api/v1/transcriptions",
        &json!({"content": b64(&wav(100, 1))}),
    );
    assert_eq!(post.status, 401);
    assert_eq!(
        request("OPTIONS", &manager.url("/api/v1/status"), &[], None).status,
        204
    );
    assert!(
        !manager.settled_log().contains("k-two"),
        "keys are never logged"
    );
}

#[test]
fn unknown_routes_and_methods_get_json_errors() {
    let manager = Setup::new().start();
    let missing = manager.get("/api/v2/whatever");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "NOT_FOUND");
    let wrong_method = manager.post_json("/health", &json!({}));
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.error_code(), "METHOD_NOT_ALLOWED");
    assert_eq!(wrong_method.header("allow"), Some("GET, HEAD, OPTIONS"));
    assert_eq!(
        manager.get("/health/").status / 100,
        manager.get("/health").status / 100,
        "trailing slash is the same route"
    );
}

#[test]
fn model_ids_are_checked_against_the_settings() {
    let manager = Setup::new().model("base").start();
    manager.wait_healthy(2);
    let ask = |model: &str| {
        manager.post_json(
            "/api/v1/transcriptions",
            &json!({ "content": b64(&wav(100, 1)), "model": model }),
        )
    };
    assert_eq!(ask("default").status, 200);
    let cold = ask("base");
    assert_eq!(
        (cold.status, cold.error_code().as_str()),
        (409, "MODEL_NOT_LOADED")
    );
    for hostile in [
        "../../etc/passwd",
        "/etc/shadow",
        "base\0",
        &"x".repeat(10_000),
        "模型",
        "base; rm -rf /",
    ] {
        let reply = ask(hostile);
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (404, "MODEL_NOT_FOUND"),
            "{hostile:.40}"
        );
    }
    assert_eq!(ask("default").status, 200, "still serving");
}

/// A worker written in Python, not ours: `/health` is fine, and `/inference` answers the
/// body that `answers` (a JSON object of strings) holds under the request's `language` field.
const ANSWERING_WORKER: &str = r#"#!/usr/bin/env python3
import http.server, json, re, sys
port = int(sys.argv[sys.argv.index("--port") + 1])
answers = json.load(open(sys.argv[-1]))
class Worker(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(b'{"status":"ok"}')
    def do_POST(self):
        form = self.rfile.read(int(self.headers["Content-Length"]))
        try:
            language = re.search(rb'name="language"\r\n\r\n(\w+)', form).group(1).decode()
            self.answer(answers[language].encode())
        except Exception as e:  # a 500 that says why, rather than a dropped connection
            body = repr(e).encode()
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Worker).serve_forever()
"#;

#[test]
fn a_worker_answer_is_read_leniently_and_one_that_is_no_object_is_a_worker_error() {
    let dir = TempDir::new("answers");
    let worker = dir.0.join("worker.py");
    std::fs::write(&worker, ANSWERING_WORKER).unwrap();
    std::fs::set_permissions(&worker, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
    let answers = dir.0.join("answers.json");
    let lenient = format!(
        r#"{{"language": 7, "duration": "long", "task": null, "extra": {deep},
             "segments": [{{"text": " Guten", "start": 0, "end": "1", "words": [3, {{"word": 5}}]}},
                          "not a segment", {deep},
                          {{"text": " Tag.", "start": 0.5, "end": 0.9, "avg_logprob": null}}]}}"#
    );
    let table = json!({
        "de": lenient,
        "fr": "[]",
        "es": r#"{"segments": [], "segments": []}"#,
        "it": "<html>busy</html>",
    });
    std::fs::write(&answers, table.to_string()).unwrap();
    let manager = Setup::new()
        .pool(1)
        .env("WHISPER_SERVER_CMD", worker.to_str().unwrap())
        .env("WHISPER_SERVER_ARGS", answers.to_str().unwrap())
        .start();
    manager.wait_healthy(1);
    let pid = manager.worker_pids()[0];
    let transcribe = |language: &str| {
        let body = json!({ "content": b64(&wav(16_000, 3)), "language": language });
        manager.post_json("/api/v1/transcriptions", &body)
    };

    let read = transcribe("de");
    assert_eq!(read.status, 200, "{}", read.text());
    let result = &read.json()["result"];
    assert_eq!(result["text"], "Guten Tag.");
    assert_eq!(result["language"], "de", "the one asked for");
    assert_eq!(
        result["duration"], 1.0,
        "the WAV's, as the worker's is no number"
    );
    let segments = result["segments"].as_array().unwrap();
    assert_eq!(
        segments.len(),
        2,
        "what is not an object is skipped: {segments:?}"
    );
    assert_eq!(
        segments[0]["end"], 0.0,
        "a time that is a string counts as absent"
    );

    for (language, why) in [
        ("fr", "not an object"),
        ("es", "duplicate field"),
        ("it", "expected value"),
    ] {
        let refused = transcribe(language);
        assert_eq!(refused.status, 502, "{language}: {}", refused.text());
        assert_eq!(refused.error_code(), "WORKER_ERROR");
        assert!(
            refused.text().contains(why),
            "{language}: {}",
            refused.text()
        );
    }
    assert_eq!(manager.worker_pids(), [pid], "the worker stays");
    assert_eq!(transcribe("de").status, 200);
}
