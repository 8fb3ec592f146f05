//! JSON-RPC 2.0: over `POST /rpc`, over TCP in rack mode, and registration with a small fake
//! orchestrator that lives in the test.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

fn rpc(manager: &Manager, message: &Value) -> Reply {
    manager.post_json("/rpc", message)
}

fn call(method: &str, params: Value, id: u64) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params })
}

/// One worker of the default model, and a cold model `base`.
fn with_model() -> Setup {
    Setup::new().pool(1).model("base")
}

#[test]
fn every_method_answers_over_http() {
    let manager = with_model().start();
    manager.wait_healthy(1);
    let result = |method: &str, params: Value| {
        let answer = rpc(&manager, &call(method, params, 7)).json();
        assert_eq!(
            (answer["jsonrpc"].as_str(), answer["id"].as_u64()),
            (Some("2.0"), Some(7)),
            "{answer}"
        );
        assert!(answer.get("error").is_none(), "{method}: {answer}");
        answer["result"].clone()
    };
    assert_eq!(result("ping", json!({}))["pong"], true);
    assert_eq!(result("getHealth", json!({}))["status"], "healthy");
    assert_eq!(
        result("getAvailableModels", json!({}))["models"],
        json!(["default"])
    );
    assert_eq!(
        result("loadModel", json!({ "modelId": "base" }))["message"],
        "Model loaded successfully"
    );
    let capacity = result("checkCapacity", json!({ "modelId": "base" }));
    assert_eq!(
        (
            capacity["available"].as_bool(),
            capacity["availableModels"].clone()
        ),
        (Some(true), json!(["base", "default"]))
    );
    let audio = wav(800, 3);
    let inference = result(
        "runInference",
        json!({ "modelId": "base", "inputData": b64(&audio), "options": { "timeout": 5000 } }),
    );
    assert_eq!(
        inference["result"]["result"]["text"],
        model_text("base", &audio)
    );
    assert_eq!(
        result("unloadModel", json!({ "modelId": "base" }))["message"],
        "Model unloaded successfully"
    );
    let cold = result("checkCapacity", json!({ "modelId": "base" }));
    assert_eq!(cold["available"], false);
}

#[test]
fn protocol_and_domain_errors_use_json_rpc_codes() {
    let manager = with_model().start();
    manager.wait_healthy(1);
    let error_of = |answer: &Value| {
        (
            answer["error"]["code"].as_i64().unwrap(),
            answer["error"]["message"].as_str().unwrap().to_string(),
        )
    };
    let raw = request(
        "POST",
        &manager.url("/rpc"),
        &[],
        Some(b"{not json".to_vec()),
    )
    .json();
    assert_eq!(error_of(&raw).0, -32700);
    assert_eq!(raw["id"], Value::Null);
    for bad in [
        json!(42),
        json!({ "method": "ping", "id": 1 }),
        json!({ "jsonrpc": "2.0", "id": 1 }),
        json!({ "jsonrpc": "2.0", "id": {}, "method": "ping" }),
        json!({ "jsonrpc": "2.0", "id": 1, "method": "ping", "params": 3 }),
        json!([]),
    ] {
        assert_eq!(error_of(&rpc(&manager, &bad).json()).0, -32600, "{bad}");
    }
    assert_eq!(
        error_of(&rpc(&manager, &call("fly", json!({}), 1)).json()).0,
        -32601
    );
    assert_eq!(
        error_of(&rpc(&manager, &call("loadModel", json!({}), 1)).json()).0,
        -32602
    );
    let cold = rpc(
        &manager,
        &call(
            "runInference",
            json!({ "modelId": "base", "inputData": b64(&wav(800, 1)) }),
            2,
        ),
    )
    .json();
    assert_eq!(error_of(&cold), (-32000, "ERR_MODEL_NOT_AVAILABLE".into()));
    assert_eq!(cold["error"]["data"]["code"], "MODEL_NOT_LOADED");
    let junk = rpc(
        &manager,
        &call(
            "runInference",
            json!({ "modelId": "default", "inputData": "!!" }),
            3,
        ),
    )
    .json();
    assert_eq!(error_of(&junk), (-32000, "ERR_INVALID_INPUT".into()));
    let unknown = rpc(
        &manager,
        &call("loadModel", json!({ "modelId": "../../etc/passwd" }), 4),
    )
    .json();
    assert_eq!(
        error_of(&unknown),
        (-32000, "ERR_MODEL_NOT_AVAILABLE".into())
    );
}

#[test]
fn batches_answer_each_request_and_skip_notifications() {
    let manager = with_model().start();
    manager.wait_healthy(1);
    let batch = json!([
        call("ping", json!({}), 1),
        { "jsonrpc": "2.0", "method": "ping" },
        call("nope", json!({}), 2),
        "junk",
    ]);
    let answers = rpc(&manager, &batch).json();
    let answers = answers.as_array().unwrap();
    assert_eq!(
        answers.len(),
        3,
        "the notification gets no answer: {answers:?}"
    );
    assert_eq!(answers[0]["result"]["pong"], true);
    assert_eq!(answers[1]["error"]["code"], -32601);
    assert_eq!(answers[2]["error"]["code"], -32600);
    let only_notifications = rpc(&manager, &json!([{ "jsonrpc": "2.0", "method": "ping" }]));
    assert_eq!(only_notifications.status, 204);
}

#[test]
fn rack_allow_requires_a_token() {
    let manager = with_model().set("rack", "allow", json!(["tok-1"])).start();
    manager.wait_healthy(1);
    let refused = rpc(&manager, &call("ping", json!({}), 1)).json();
    assert_eq!(refused["error"]["message"], "ERR_UNAUTHORIZED");
    let mut with_token = call("ping", json!({}), 2);
    with_token["auth"] = json!("tok-1");
    assert_eq!(rpc(&manager, &with_token).json()["result"]["pong"], true);
    with_token["auth"] = json!("tok-2");
    assert_eq!(
        rpc(&manager, &with_token).json()["error"]["message"],
        "ERR_UNAUTHORIZED"
    );
}

/// A newline-delimited JSON-RPC connection.
struct Line(BufReader<TcpStream>);

impl Line {
    fn connect(port: u16) -> Line {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Line(BufReader::new(stream))
    }

    fn send(&mut self, message: &str) {
        self.0
            .get_mut()
            .write_all(format!("{message}\n").as_bytes())
            .unwrap();
    }

    fn receive(&mut self) -> Value {
        let mut line = String::new();
        self.0.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    fn ask(&mut self, message: Value) -> Value {
        self.send(&message.to_string());
        self.receive()
    }
}

fn rack_setup(rack_port: u16) -> Setup {
    with_model()
        .set("rack", "port", json!(rack_port))
        .set("inference", "maxConcurrentInferences", json!(1))
        .set("inference", "maxQueue", json!(0))
        .stub(&["--delay-ms", "600"])
        .args(&["--mode", "rack"])
}

#[test]
fn an_orchestrator_drives_a_rack_worker_over_tcp() {
    let rack_port = free_port_base();
    let manager = rack_setup(rack_port).start();
    let announced = format!("rack RPC listening on tcp://127.0.0.1:{rack_port}");
    assert!(manager.wait_log(&announced), "the rack port was announced");
    manager.wait_healthy(1);
    let mut line = Line::connect(rack_port);
    assert_eq!(
        line.ask(call("loadModel", json!({ "modelId": "base" }), 1))["result"]["message"],
        "Model loaded successfully"
    );
    let capacity = line.ask(call("checkCapacity", json!({ "modelId": "base" }), 2));
    assert_eq!(capacity["result"]["available"], true);
    assert!(capacity["result"]["availableModels"]
        .as_array()
        .unwrap()
        .contains(&json!("base")));
    let audio = wav(800, 5);
    let run = call(
        "runInference",
        json!({ "modelId": "base", "inputData": b64(&audio) }),
        3,
    );
    // Two at once on a worker that allows one inference and no queue: one is refused.
    let mut second = Line::connect(rack_port);
    line.send(&run.to_string());
    std::thread::sleep(Duration::from_millis(200));
    let refused = second.ask(call(
        "runInference",
        json!({ "modelId": "base", "inputData": b64(&audio) }),
        4,
    ));
    assert_eq!(
        refused["error"]["message"], "ERR_CAPACITY_EXCEEDED",
        "{refused}"
    );
    let served = line.receive();
    assert_eq!(
        served["result"]["result"]["result"]["text"],
        model_text("base", &audio)
    );
    assert_eq!(
        line.ask(call("unloadModel", json!({ "modelId": "base" }), 5))["result"]["message"],
        "Model unloaded successfully"
    );
    // Junk on the wire gets an error line and the connection stays usable.
    line.send("{broken");
    assert_eq!(line.receive()["error"]["code"], -32700);
    assert_eq!(line.ask(call("ping", json!({}), 6))["result"]["pong"], true);
}

#[test]
fn an_oversized_rack_message_is_refused_and_the_connection_closed() {
    let rack_port = free_port_base();
    let manager = rack_setup(rack_port)
        .set("server", "maxBodyBytes", json!(1000))
        .start();
    manager.wait_healthy(1);
    let mut line = Line::connect(rack_port);
    let huge = "x".repeat(200_000);
    line.send(&huge);
    assert_eq!(line.receive()["error"]["code"], -32600);
    let mut rest = String::new();
    assert_eq!(
        line.0.read_line(&mut rest).unwrap_or(0),
        0,
        "closed after the error"
    );
    assert_eq!(
        Line::connect(rack_port).ask(call("ping", json!({}), 1))["result"]["pong"],
        true
    );
}

/// A fake orchestrator: records each registration body; fails the first `failures` of them.
fn orchestrator(failures: usize) -> (u16, Arc<Mutex<Vec<Value>>>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let port = server.server_addr().to_ip().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (n, mut request) in server.incoming_requests().enumerate() {
            let mut body = String::new();
            let _ = request.as_reader().read_to_string(&mut body);
            let ok = request.url() == "/api/workers/register" && n >= failures;
            if ok {
                record
                    .lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap_or(Value::Null));
            }
            let _ = request.respond(tiny_http::Response::empty(if ok { 200 } else { 500 }));
        }
    });
    (port, seen)
}

/// A rack worker that registers with the orchestrator on `orchestrator_port` every 200 ms.
fn registering_worker(rack_port: u16, orchestrator_port: u16) -> Manager {
    let url = format!("http://127.0.0.1:{orchestrator_port}");
    let manager = rack_setup(rack_port)
        .set("rack", "orchestratorUrl", json!(url))
        .set("rack", "heartbeatMs", json!(200))
        .start();
    manager.wait_healthy(1);
    manager
}

#[test]
fn a_rack_worker_registers_and_keeps_a_heartbeat() {
    let (port, seen) = orchestrator(0);
    let rack_port = free_port_base();
    let _manager = registering_worker(rack_port, port);
    let beats = wait_for(SOON, || {
        let seen = seen.lock().unwrap();
        (seen.len() >= 3 && seen.last().unwrap()["capabilities"]["models"] == json!(["default"]))
            .then(|| seen.clone())
    })
    .expect("no heartbeat reached the orchestrator");
    let last = beats.last().unwrap();
    assert_eq!(last["address"], format!("127.0.0.1:{rack_port}"));
    assert_eq!(last["workerId"], format!("ism-127.0.0.1-{rack_port}"));
    assert_eq!(last["capabilities"]["capacity"]["maxConcurrent"], 1);
}

#[test]
fn a_failing_orchestrator_costs_a_retry_not_the_worker() {
    let (port, seen) = orchestrator(2);
    let rack_port = free_port_base();
    let manager = registering_worker(rack_port, port);
    wait_for(SOON, || (!seen.lock().unwrap().is_empty()).then_some(()))
        .expect("registration never succeeded");
    // The worker logs its success once the orchestrator's answer is back.
    assert!(
        manager.wait_log("registered with the orchestrator"),
        "the success was never logged"
    );
    let log = manager.log_text();
    assert!(
        log.contains("orchestrator registration failed (the orchestrator answered 500)"),
        "{log}"
    );
    assert_eq!(
        manager.get("/health").status,
        200,
        "the worker served throughout"
    );
}
