//! schemathesis (from PyPI) generates requests from `/openapi/json` and checks the answers: no
//! 5xx, and every status, content type, header and body as the document says. Ignored by
//! default: it needs `pip install schemathesis`, which `.ci/run` does.

mod support;

use std::process::Command;

use support::*;

/// Checks that hold for any input. (Whether generated "valid" data is accepted is left out:
/// a JSON schema cannot say "base64 of a WAV file", so most generated audio is rightly 400.)
const CHECKS: &str =
    "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance";

#[test]
#[ignore = "needs schemathesis (pip install schemathesis)"]
fn the_service_keeps_the_openapi_contract() {
    needs::program("schemathesis", "pip install schemathesis");
    let manager = Setup::new().model_with_pool("base", 1).start();
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
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary = stdout
        .lines()
        .skip_while(|l| !l.contains("Test cases:"))
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    report(&format!("schemathesis: {summary}"));
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        manager.get("/health").status,
        200,
        "still serving after the fuzzing"
    );
}
