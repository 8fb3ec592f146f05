//! schemathesis (from PyPI) generates requests from `/openapi/json` and checks the answers: no
//! 5xx, and every status, content type, header and body as the document says. Gated by
//! `ISM_SCHEMATHESIS`, which `.ci/run` sets after `pip install schemathesis`.

mod support;

use std::io::Write;
use std::process::Command;

use serde_json::json;
use support::*;

/// Checks that hold for any input. (Whether generated "valid" data is accepted is left out:
/// a JSON schema cannot say "base64 of a WAV file", so most generated audio is rightly 400.)
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance";

#[test]
fn the_service_keeps_the_openapi_contract() {
    if std::env::var_os("ISM_SCHEMATHESIS").is_none() {
        let _ = writeln!(std::io::stderr(), "SKIPPED: the schemathesis test needs ISM_SCHEMATHESIS=1 and `pip install schemathesis`");
        return;
    }
    let manager = Setup::new()
        .set(
            "models",
            "base",
            json!({ "path": "models/base.bin", "poolSize": 1 }),
        )
        .start();
    manager.wait_healthy(2);
    // schemathesis keeps a cache in its working directory: keep it out of the repository.
    let scratch = TempDir::new("schemathesis");
    let output = Command::new("schemathesis")
        .current_dir(&scratch.0)
        .args([
            "run",
            &manager.url("/openapi/json"),
            "--checks",
            CHECKS,
            "--max-examples",
            "50",
            "--seed",
            "1",
        ])
        .output()
        .expect("schemathesis runs");
    let report = String::from_utf8_lossy(&output.stdout);
    let summary = report
        .lines()
        .skip_while(|l| !l.contains("Test cases:"))
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    let _ = writeln!(std::io::stderr(), "schemathesis: {summary}");
    assert!(
        output.status.success(),
        "{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        manager.get("/health").status,
        200,
        "still serving after the fuzzing"
    );
}
