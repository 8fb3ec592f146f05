//! Models, the inference engine and capacity (README "Models, inference and rack mode"), through the binary.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// Two extra models besides the default one (whose model the stub args choose).
fn with_models() -> Setup {
    Setup::new().pool(1).model("a").model_with_pool("b", 2)
}

fn model<'a>(models: &'a Value, id: &str) -> &'a Value {
    models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("{id} in {models}"))
}

fn infer(manager: &Manager, model: &str, body: Value) -> Reply {
    manager.post_json(&format!("/api/inference/{model}"), &body)
}

fn audio_body(seed: u16) -> (Vec<u8>, Value) {
    let audio = wav(800, seed);
    let body = json!({ "inputData": b64(&audio) });
    (audio, body)
}

#[test]
fn models_load_serve_and_unload() {
    let manager = with_models().start();
    manager.wait_healthy(1);
    let models = manager.get("/api/models").json();
    assert_eq!(models["success"], true);
    assert_eq!(model(&models, "default")["state"], "warm");
    assert_eq!(model(&models, "a")["state"], "cold");
    assert_eq!(model(&models, "a")["path"], "models/a.bin");
    assert_eq!(model(&models, "a")["lastUsed"], Value::Null);

    let loaded = manager.post_json("/api/models/b/load", &json!({}));
    assert_eq!(
        loaded.json(),
        json!({ "success": true, "message": "Model loaded successfully" })
    );
    let b = model(&manager.get("/api/models").json(), "b").clone();
    assert_eq!(
        (b["state"].as_str(), b["workers"].as_u64()),
        (Some("warm"), Some(2)),
        "returns when both workers are healthy"
    );
    let again = manager.post_json("/api/models/b/load", &json!({}));
    assert_eq!(again.json()["message"], "Model already loaded");

    // Requests for b reach b's workers (the stub names its model file).
    let (audio, body) = audio_body(1);
    let reply = infer(&manager, "b", body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["result"]["result"]["text"],
        model_text("b", &audio)
    );
    let seed1 = manager.post_json(
        "/api/v1/transcriptions",
        &json!({ "content": b64(&audio), "model": "b" }),
    );
    assert_eq!(seed1.json()["result"]["text"], model_text("b", &audio));
    assert!(model(&manager.get("/api/models").json(), "b")["lastUsed"].is_string());

    let unloaded = manager.post_json("/api/models/b/unload", &json!({}));
    assert_eq!(
        unloaded.json(),
        json!({ "success": true, "message": "Model unloaded successfully" })
    );
    assert_eq!(
        model(&manager.get("/api/models").json(), "b")["state"],
        "cold"
    );
    assert_eq!(
        manager.post_json("/api/models/b/unload", &json!({})).json()["message"],
        "Model not loaded"
    );
    wait_for(SOON, || (manager.workers().len() == 1).then_some(()))
        .expect("b's workers were stopped");

    let pinned = manager.post_json("/api/models/default/unload", &json!({}));
    assert_eq!(
        (pinned.status, pinned.error_code().as_str()),
        (400, "INVALID_REQUEST"),
        "the default model stays"
    );

    for hostile in ["nope", "..%2F..%2Fetc%2Fpasswd", "b%00", "%E6%A8%A1"] {
        let reply = manager.post_json(&format!("/api/models/{hostile}/load"), &json!({}));
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (404, "MODEL_NOT_FOUND"),
            "{hostile}"
        );
    }
}

#[test]
fn a_cold_model_is_409_unless_auto_load() {
    let manager = with_models().start();
    manager.wait_healthy(1);
    let cold = infer(&manager, "a", audio_body(2).1);
    assert_eq!(
        (cold.status, cold.error_code().as_str()),
        (409, "MODEL_NOT_LOADED")
    );
    let unknown = infer(&manager, "zzz", audio_body(2).1);
    assert_eq!(
        (unknown.status, unknown.error_code().as_str()),
        (404, "MODEL_NOT_FOUND")
    );
    drop(manager);

    let manager = with_models()
        .set("inference", "autoLoad", json!(true))
        .start();
    manager.wait_healthy(1);
    let (audio, body) = audio_body(3);
    let loaded_on_demand = infer(&manager, "a", body);
    assert_eq!(loaded_on_demand.status, 200, "{}", loaded_on_demand.text());
    assert_eq!(
        loaded_on_demand.json()["result"]["result"]["text"],
        model_text("a", &audio)
    );
    assert_eq!(
        model(&manager.get("/api/models").json(), "a")["state"],
        "warm"
    );
}

#[test]
fn eviction_under_traffic_is_lru_spares_the_default_and_cuts_nothing() {
    // Room for two warm models: the default and one more.
    let manager = with_models()
        .set("inference", "modelCacheSize", json!(2))
        .stub(&["--delay-ms", "800"])
        .start();
    manager.wait_healthy(1);
    assert_eq!(
        manager.post_json("/api/models/a/load", &json!({})).status,
        200
    );
    std::thread::scope(|scope| {
        // A request on a is in flight when loading b evicts a.
        let (audio, body) = audio_body(4);
        let in_flight = scope.spawn(|| infer(&manager, "a", body));
        manager.busy_worker_of("a");
        let loaded = manager.post_json("/api/models/b/load", &json!({}));
        assert_eq!(loaded.status, 200, "{}", loaded.text());
        let reply = in_flight.join().unwrap();
        assert_eq!(
            reply.status,
            200,
            "eviction cut an in-flight request: {}",
            reply.text()
        );
        assert_eq!(
            reply.json()["result"]["result"]["text"],
            model_text("a", &audio)
        );
    });
    let models = manager.get("/api/models").json();
    assert_eq!(
        model(&models, "a")["state"],
        "cold",
        "a was the least recently used"
    );
    assert_eq!(model(&models, "b")["state"], "warm");
    assert_eq!(
        model(&models, "default")["state"],
        "warm",
        "the default model is never evicted"
    );
    assert!(manager.wait_log("evicting model a"));
}

#[test]
fn a_full_cache_of_only_the_default_refuses_to_load() {
    let manager = with_models()
        .set("inference", "modelCacheSize", json!(1))
        .start();
    manager.wait_healthy(1);
    let refused = manager.post_json("/api/models/a/load", &json!({}));
    assert_eq!(
        (refused.status, refused.error_code().as_str()),
        (503, "CAPACITY_EXCEEDED")
    );
    assert_eq!(
        model(&manager.get("/api/models").json(), "default")["state"],
        "warm"
    );
}

#[test]
fn the_engine_validates_runs_and_records_history() {
    let manager = Setup::new()
        .set("inference", "historySize", json!(3))
        .start();
    manager.wait_healthy(2);
    let (audio, body) = audio_body(5);
    let reply = infer(&manager, "default", body);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(
        (answer["success"].as_bool(), answer["modelId"].as_str()),
        (Some(true), Some("default"))
    );
    let result = &answer["result"];
    assert!(result["inferenceId"].as_str().unwrap().starts_with("inf-"));
    assert!(result["processingTime"].is_u64() && result["timestamp"].is_string());
    assert_eq!(result["result"]["text"], stub_text(&audio));
    assert_eq!(
        result["result"]["segments"],
        json!([]),
        "json unless timestamps are asked for"
    );
    let verbose = infer(
        &manager,
        "default",
        json!({ "inputData": b64(&audio), "options": { "responseFormat": "verbose_json", "language": "de" } }),
    );
    let verbose = verbose.json();
    let segments = verbose["result"]["result"]["segments"].as_array().unwrap();
    assert_eq!(segments.last().unwrap()["end"], 0.05);
    assert_eq!(verbose["result"]["result"]["language"], "de");

    for (body, why) in [
        (json!({}), "missing inputData"),
        (json!({ "inputData": "" }), "empty"),
        (json!({ "inputData": "%%%" }), "not base64"),
        (json!({ "inputData": b64(b"RIFF") }), "too short"),
        (
            json!({ "inputData": b64(&audio), "options": { "responseFormat": "srt" } }),
            "bad format",
        ),
        (
            json!({ "inputData": b64(&audio), "options": { "timeout": 50 } }),
            "timeout under 100 ms",
        ),
        (
            json!({ "inputData": b64(&audio), "options": { "timeout": 3_600_001u64 } }),
            "timeout over an hour, past inferenceTimeoutMs",
        ),
    ] {
        let reply = infer(&manager, "default", body);
        assert_eq!(
            (reply.status, reply.error_code().as_str()),
            (400, "INVALID_REQUEST"),
            "{why}: {}",
            reply.text()
        );
    }
    // An hour is the longest options.timeout while inferenceTimeoutMs is shorter.
    let longest = infer(
        &manager,
        "default",
        json!({ "inputData": b64(&audio), "options": { "timeout": 3_600_000u64 } }),
    );
    assert_eq!(longest.status, 200, "{}", longest.text());

    // Without ffmpeg (the tests' default) what is neither WAV, MP3, FLAC nor Ogg is 415.
    let not_audio = infer(
        &manager,
        "default",
        json!({ "inputData": b64(&[9u8; 200]) }),
    );
    assert_eq!(
        (not_audio.status, not_audio.error_code().as_str()),
        (415, "UNSUPPORTED_MEDIA_TYPE")
    );

    let history = manager.get("/api/inference/history").json();
    let stats = &history["statistics"];
    // Three runs succeeded; five of the bad requests reached the engine (the first two JSON
    // shapes and the bad options are refused before it).
    assert_eq!(stats["successfulInferences"], 3);
    assert_eq!(
        stats["totalInferences"].as_u64().unwrap(),
        stats["successfulInferences"].as_u64().unwrap()
            + stats["failedInferences"].as_u64().unwrap()
    );
    assert!(stats["failedInferences"].as_u64().unwrap() >= 3);
    let rate = stats["successRate"].as_f64().unwrap();
    assert!(rate > 0.0 && rate < 1.0);
    let entries = history["history"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "the ring holds historySize entries");
    assert_eq!(entries[0]["success"], false);
    assert_eq!(
        entries[0]["error"], "UNSUPPORTED_MEDIA_TYPE",
        "the last run, newest first"
    );
    assert_eq!(
        manager.get("/api/inference/history?limit=1").json()["history"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(manager.get("/api/inference/history?limit=x").status, 400);
}

#[test]
fn a_deadline_hit_is_504_and_the_worker_is_recycled() {
    // The server's own deadline (not a client's shorter one): the worker overran it.
    let manager = Setup::new()
        .pool(1)
        .stub(&["--delay-ms", "3000"])
        .set("inference", "inferenceTimeoutMs", json!(400))
        .start();
    let first = manager.wait_healthy(1)["workers"][0]["id"].clone();
    let reply = infer(
        &manager,
        "default",
        json!({ "inputData": b64(&wav(800, 1)) }),
    );
    assert_eq!(
        (reply.status, reply.error_code().as_str()),
        (504, "TIMEOUT")
    );
    manager.wait_replaced(&first); // the late worker was recycled
    let last = &manager.get("/api/inference/history?limit=1").json()["history"][0];
    assert_eq!(
        (last["success"].as_bool(), last["error"].as_str()),
        (Some(false), Some("TIMEOUT"))
    );
}

#[test]
fn a_burst_beyond_capacity_is_refused_cleanly() {
    let manager = Setup::new()
        .set("inference", "maxConcurrentInferences", json!(1))
        .set("inference", "maxQueue", json!(1))
        .stub(&["--delay-ms", "700"])
        .start();
    manager.wait_healthy(2);
    let capacity = manager.get("/api/capacity").json();
    assert_eq!(
        capacity,
        json!({ "maxConcurrent": 1, "currentLoad": 0, "available": true, "queueDepth": 0, "availableModels": ["default"] })
    );
    let manager = &manager;
    let replies: Vec<Reply> = std::thread::scope(|scope| {
        let burst: Vec<_> = (0..5)
            .map(|i| scope.spawn(move || infer(manager, "default", audio_body(i).1)))
            .collect();
        let busy = wait_for(SOON, || {
            let c = manager.get("/api/capacity").json();
            (c["currentLoad"] == 1).then_some(c)
        })
        .expect("the burst never showed in /api/capacity");
        assert_eq!(busy["maxConcurrent"], 1);
        burst.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + refused.len(), 5);
    assert!(
        (1..=2).contains(&ok),
        "one at a time, one waiting: {ok} succeeded"
    );
    for reply in refused {
        assert_eq!(reply.error_code(), "CAPACITY_EXCEEDED");
        assert!(reply.header("retry-after").is_some());
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(manager.get("/api/capacity").json()["currentLoad"], 0);
}
