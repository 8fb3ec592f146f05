//! The page at `GET /` (README "The page"): served to browsers, not to API clients, and used
//! for real in Chromium against real workers (`tests/clients/page.py`).

mod support;

use std::path::PathBuf;

use serde_json::json;
use support::*;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

#[test]
fn a_browser_gets_the_page_and_api_clients_the_json() {
    let manager = Setup::new().set("server", "apiKeys", json!(["k"])).start();
    let page = request(
        "GET",
        &manager.url("/"),
        &[("Accept", BROWSER_ACCEPT)],
        None,
    );
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type").unwrap(),
        "text/html; charset=utf-8"
    );
    let policy = page.header("content-security-policy").unwrap();
    assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"));
    assert_eq!(page.header("vary").unwrap(), "Accept");
    let html = page.text();
    assert!(html.contains("<title>inference-server-manager</title>"));
    assert!(html.contains("id=\"pool\"") && html.contains("id=\"transcribe\""));
    // Open without a key, like the JSON index: the page holds no data, the API it calls does.
    for accept in [None, Some("*/*"), Some("application/json")] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let index = request("GET", &manager.url("/"), &headers, None);
        assert_eq!(index.status, 200);
        assert_eq!(
            index.json()["service"],
            "inference-server-manager",
            "{accept:?}"
        );
    }
}

/// Where the browser test leaves its screenshots: `target/screenshots/`.
fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("screenshots")
}

#[test]
#[ignore = "needs chromium, pip install playwright, ffmpeg and the build of scripts/setup-whisper.sh"]
fn the_page_records_uploads_streams_and_watches_the_pool_in_chromium() {
    let dir = needs::real_whisper();
    needs::program("chromium", "apt-get install chromium");
    needs::program("ffmpeg", "apt-get install ffmpeg");
    needs::python_modules(&["playwright"], "pip install playwright");
    let model = dir.join("ggml-tiny.en.bin");
    // Two workers of tiny.en, and the same model file under a second id that starts cold, for
    // the load and unload buttons; 15-second chunks, so a 42-second upload streams in parts.
    let manager = Setup::new()
        .real_worker(&dir)
        .with_ffmpeg()
        .env("WHISPER_SERVER_ARGS", "")
        .set("models", "tiny.en", json!({ "path": model }))
        .set(
            "models",
            "tiny-copy",
            json!({ "path": model, "poolSize": 1 }),
        )
        .set_top("defaultModel", json!("tiny.en"))
        .set("audio", "chunkSeconds", json!(15))
        .set("workers", "healthIntervalMs", json!(500))
        .start();
    manager.wait_healthy(2);
    let keyed = Setup::new()
        .set("server", "apiKeys", json!(["page-test-key"]))
        .start();
    keyed.wait_healthy_with_key(2, "page-test-key");

    let screenshots = screenshot_dir();
    std::fs::create_dir_all(&screenshots).unwrap();
    let report = run_client(
        "page.py",
        [
            "--url".into(),
            manager.url("/"),
            "--keyed-url".into(),
            keyed.url("/"),
            "--key".into(),
            "page-test-key".into(),
            "--jfk".into(),
            dir.join("jfk.wav").display().to_string(),
            "--screenshots".into(),
            screenshots.display().to_string(),
        ],
    )
    .unwrap_or_else(|failure| panic!("{failure}\n--- manager log ---\n{}", manager.log_text()));
    println!("{report}");
    println!("screenshots: {}", screenshots.display());
}
