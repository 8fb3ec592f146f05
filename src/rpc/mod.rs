//! JSON-RPC 2.0 over the same operations as the HTTP API (`engine::operations`), for an
//! orchestrator (README "JSON-RPC and rack mode"). One dispatcher, reached two ways: `POST /rpc` in http mode, and
//! newline-delimited JSON on TCP `rack.port` in rack mode (`rack`). With `rack.orchestratorUrl`
//! set, the worker also registers itself there (`orchestrator`).
//!
//! Results are the HTTP bodies of the matching routes. Protocol errors use the standard codes;
//! domain errors are `-32000` with a `message` an orchestrator can branch on (`ERR_*`) and the
//! service's own code and sentence in `data`.

pub mod orchestrator;
pub mod rack;

use serde_json::{json, Value};

use crate::engine::operations::InferenceRequest;
use crate::engine::Engine;
use crate::error::ApiError;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
/// Domain errors (the `ERR_*` messages).
pub const SERVER_ERROR: i64 = -32000;

/// Calls a batch may hold. An orchestrator batches a few calls; a batch of half a million
/// `ping`s (23 MB) once took 863 MB to parse and answer. A longer batch is refused whole,
/// before more than this many calls are parsed.
pub const MAX_BATCH: usize = 100;

/// Bytes of answers a batch may accumulate: past this the remaining calls are not run, and
/// each is answered with an error instead.
pub const MAX_BATCH_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// The methods, for `-32601` messages and the README.
pub const METHODS: &[&str] = &[
    "runInference",
    "loadModel",
    "unloadModel",
    "checkCapacity",
    "getHealth",
    "getAvailableModels",
    "ping",
];

/// A well-formed request, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// `None` for a notification, which gets no answer.
    pub id: Option<Value>,
    pub method: String,
    pub params: Value,
    pub auth: Option<String>,
}

/// What a line or body held: one request or a batch; each either a `Call` or the error
/// response it already earned.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Single(Result<Call, Value>),
    Batch(Vec<Result<Call, Value>>),
}

/// The framing half of JSON-RPC, with no side effects (and so a fuzz target): parse errors
/// (a message that is not UTF-8 among them), invalid requests, empty batches and batches of
/// more than `MAX_BATCH` calls come back as their error responses. The message is parsed
/// once, and a batch only up to its cap.
pub fn parse(message: &[u8]) -> Message {
    let parse_error = |e: serde_json::Error| {
        Message::Single(Err(error(
            Value::Null,
            PARSE_ERROR,
            "Parse error",
            Some(json!(e.to_string())),
        )))
    };
    if !message.trim_ascii_start().starts_with(b"[") {
        return match serde_json::from_slice::<Value>(message) {
            Ok(one) => Message::Single(parse_call(one)),
            Err(e) => parse_error(e),
        };
    }
    let mut reader = serde_json::Deserializer::from_slice(message);
    let batch = serde::Deserializer::deserialize_seq(&mut reader, CappedBatch)
        .and_then(|batch| reader.end().map(|()| batch));
    match batch {
        Ok(batch) if batch.is_empty() => Message::Single(Err(error(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request",
            None,
        ))),
        Ok(batch) => Message::Batch(batch.into_iter().map(parse_call).collect()),
        Err(e) if e.to_string().starts_with(TOO_LONG) => Message::Single(Err(error(
            Value::Null,
            INVALID_REQUEST,
            "Invalid Request",
            Some(json!(format!("a batch holds at most {MAX_BATCH} calls"))),
        ))),
        Err(e) => parse_error(e),
    }
}

const TOO_LONG: &str = "batch too long";

/// The elements of a JSON array, refusing it as soon as it holds more than `MAX_BATCH`.
struct CappedBatch;

impl<'de> serde::de::Visitor<'de> for CappedBatch {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "an array of at most {MAX_BATCH} calls")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut calls = Vec::new();
        while let Some(call) = seq.next_element::<Value>()? {
            if calls.len() == MAX_BATCH {
                return Err(serde::de::Error::custom(TOO_LONG));
            }
            calls.push(call);
        }
        Ok(calls)
    }
}

fn parse_call(message: Value) -> Result<Call, Value> {
    let Value::Object(mut request) = message else {
        return Err(error(Value::Null, INVALID_REQUEST, "Invalid Request", None));
    };
    let id = request.remove("id");
    let valid_id = id
        .as_ref()
        .is_none_or(|id| id.is_string() || id.is_number() || id.is_null());
    let params = request.remove("params").unwrap_or_else(|| json!({}));
    let method = match request.remove("method") {
        Some(Value::String(method))
            if valid_id && params.is_object() && request.get("jsonrpc") == Some(&json!("2.0")) =>
        {
            method
        }
        _ => {
            return Err(error(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "Invalid Request",
                None,
            ))
        }
    };
    let auth = request
        .get("auth")
        .and_then(Value::as_str)
        .map(String::from);
    Ok(Call {
        id,
        method,
        params,
        auth,
    })
}

/// Where a message came from, which decides the tokens its calls must carry as `auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `POST /rpc`: the HTTP route has already checked `server.apiKeys`; `rack.allow`, when
    /// set, is asked for as well.
    Http,
    /// Rack mode's TCP port, which has no other check: `rack.allow`, or `server.apiKeys` when
    /// `rack.allow` is empty, so setting API keys never leaves rack mode open.
    Rack,
}

impl Transport {
    fn tokens(self, engine: &Engine) -> &[String] {
        let allow = &engine.settings.rack.allow;
        match self {
            Transport::Rack if allow.is_empty() => &engine.settings.server.api_keys,
            _ => allow,
        }
    }
}

/// Answers one JSON-RPC message (a request, a notification or a batch). `None` when nothing
/// is to be sent back: notifications only.
pub fn handle(engine: &Engine, message: &[u8], transport: Transport) -> Option<Value> {
    answer_message(engine, parse(message), transport)
}

/// Answers a message `parse` already read. The answers of a batch stop being run past
/// `MAX_BATCH_ANSWER_BYTES`: each call left gets an error instead.
pub fn answer_message(engine: &Engine, message: Message, transport: Transport) -> Option<Value> {
    let tokens = transport.tokens(engine);
    match message {
        Message::Single(one) => answer(engine, one, tokens),
        Message::Batch(batch) => {
            let mut size = 0;
            let answers: Vec<Value> = batch
                .into_iter()
                .filter_map(|one| {
                    if size <= MAX_BATCH_ANSWER_BYTES {
                        let answer = answer(engine, one, tokens)?;
                        size += serde_json::to_vec(&answer).map_or(0, |a| a.len());
                        return Some(answer);
                    }
                    let id = one.ok()?.id?;
                    Some(error(
                        id,
                        SERVER_ERROR,
                        "ERR_CAPACITY_EXCEEDED",
                        Some(json!(format!(
                            "not run: the batch's answers passed {MAX_BATCH_ANSWER_BYTES} bytes"
                        ))),
                    ))
                })
                .collect();
            (!answers.is_empty()).then_some(Value::Array(answers))
        }
    }
}

fn answer(engine: &Engine, parsed: Result<Call, Value>, tokens: &[String]) -> Option<Value> {
    let call = match parsed {
        Ok(call) => call,
        Err(response) => return Some(response),
    };
    let outcome = if authorized(tokens, call.auth.as_deref()) {
        run(engine, &call.method, &call.params)
    } else {
        Err(Failure::Domain(ApiError::Unauthorized))
    };
    // A request without an id is a notification: it runs, and nothing is sent back.
    let id = call.id?;
    Some(match outcome {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err(Failure::Protocol(code, message)) => error(id, code, &message, None),
        Err(Failure::Domain(e)) => error(
            id,
            SERVER_ERROR,
            domain_message(&e),
            Some(json!({ "code": e.code(), "detail": e.to_string() })),
        ),
    })
}

/// With `tokens` set, a request must carry one of them as `auth`.
fn authorized(tokens: &[String], token: Option<&str>) -> bool {
    tokens.is_empty()
        || crate::auth::authorized(tokens, token.map(|t| format!("Bearer {t}")).as_deref())
}

enum Failure {
    Protocol(i64, String),
    Domain(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure::Domain(e)
    }
}

fn run(engine: &Engine, method: &str, params: &Value) -> Result<Value, Failure> {
    match method {
        "runInference" => {
            let model = model_id(params)?;
            let request = InferenceRequest::from_value(params.clone())?;
            Ok(engine.run_inference(&model, request)?)
        }
        "loadModel" => Ok(engine.load_model(&model_id(params)?)?),
        "unloadModel" => Ok(engine.unload_model(&model_id(params)?)?),
        "checkCapacity" => {
            let model = params.get("modelId").and_then(Value::as_str);
            Ok(engine.capacity(model)?)
        }
        "getHealth" => Ok(engine.health()?.body),
        "getAvailableModels" => Ok(engine.available_models()),
        "ping" => Ok(json!({ "pong": true, "timestamp": crate::clock::now_rfc3339() })),
        other => Err(Failure::Protocol(
            METHOD_NOT_FOUND,
            format!(
                "Method not found: `{other:.40}`; the methods are {}",
                METHODS.join(", ")
            ),
        )),
    }
}

fn model_id(params: &Value) -> Result<String, Failure> {
    match params.get("modelId").and_then(Value::as_str) {
        Some(id) if !id.is_empty() => Ok(id.to_string()),
        _ => Err(Failure::Protocol(
            INVALID_PARAMS,
            "Invalid params: `modelId` (a string) is required".into(),
        )),
    }
}

/// The `ERR_*` message an orchestrator branches on.
fn domain_message(e: &ApiError) -> &'static str {
    match e {
        ApiError::CapacityExceeded { .. } | ApiError::NoHealthyWorkers { .. } => {
            "ERR_CAPACITY_EXCEEDED"
        }
        ApiError::ModelNotFound(_) | ApiError::ModelNotLoaded(_) => "ERR_MODEL_NOT_AVAILABLE",
        ApiError::Timeout(_) | ApiError::BodyTimeout => "ERR_INFERENCE_TIMEOUT",
        ApiError::Unauthorized => "ERR_UNAUTHORIZED",
        ApiError::WorkerError(_) => "ERR_WORKER_FAILED",
        ApiError::Internal(_) => "ERR_INTERNAL",
        _ => "ERR_INVALID_INPUT",
    }
}

/// A protocol error with no id, as one line of newline-delimited JSON.
pub fn error_line(code: i64, message: &str) -> String {
    format!("{}\n", error(Value::Null, code, message, None))
}

fn error(id: Value, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn domain_errors_map_to_err_messages() {
        let cases = [
            (
                ApiError::CapacityExceeded {
                    retry_after: Duration::ZERO,
                    reason: String::new(),
                },
                "ERR_CAPACITY_EXCEEDED",
            ),
            (
                ApiError::ModelNotLoaded("m".into()),
                "ERR_MODEL_NOT_AVAILABLE",
            ),
            (ApiError::Timeout("t".into()), "ERR_INFERENCE_TIMEOUT"),
            (ApiError::InvalidRequest("bad".into()), "ERR_INVALID_INPUT"),
            (ApiError::PayloadTooLarge { limit: 1 }, "ERR_INVALID_INPUT"),
        ];
        for (e, message) in cases {
            assert_eq!(domain_message(&e), message, "{e:?}");
        }
    }

    #[test]
    fn framing_sorts_calls_notifications_and_junk() {
        let call = |text: &str| match parse(text.as_bytes()) {
            Message::Single(one) => one,
            Message::Batch(_) => panic!("a batch"),
        };
        let ok = call(r#"{"jsonrpc":"2.0","id":3,"method":"ping","auth":"t"}"#).unwrap();
        assert_eq!(
            (ok.id, ok.method.as_str(), ok.auth.as_deref()),
            (Some(json!(3)), "ping", Some("t"))
        );
        assert_eq!(
            call(r#"{"jsonrpc":"2.0","method":"ping"}"#).unwrap().id,
            None,
            "a notification"
        );
        assert_eq!(call("{").unwrap_err()["error"]["code"], PARSE_ERROR);
        // Not UTF-8 (a byte 0xff in a string): refused, not read with replacement characters.
        match parse(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"pi\xffng\"}") {
            Message::Single(Err(e)) => assert_eq!(e["error"]["code"], PARSE_ERROR),
            other => panic!("{other:?}"),
        }
        assert_eq!(call("[]").unwrap_err()["error"]["code"], INVALID_REQUEST);
        for bad in [
            r#"{"id":1,"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            "null",
        ] {
            assert_eq!(
                call(bad).unwrap_err()["error"]["code"],
                INVALID_REQUEST,
                "{bad}"
            );
        }
        match parse(br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}, 5]"#) {
            Message::Batch(batch) => assert!(batch[0].is_ok() && batch[1].is_err()),
            single => panic!("{single:?}"),
        }
    }

    #[test]
    fn a_batch_is_capped_while_it_is_parsed() {
        let ping = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let batch = |n: usize| format!("[{}]", vec![ping; n].join(","));
        assert!(
            matches!(parse(batch(MAX_BATCH).as_bytes()), Message::Batch(b) if b.len() == MAX_BATCH)
        );
        match parse(batch(MAX_BATCH + 1).as_bytes()) {
            Message::Single(Err(e)) => assert_eq!(e["error"]["code"], INVALID_REQUEST),
            other => panic!("{other:?}"),
        }
        match parse(format!("{} x", batch(2)).as_bytes()) {
            Message::Single(Err(e)) => assert_eq!(e["error"]["code"], PARSE_ERROR),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn model_id_is_required_and_a_string() {
        assert!(matches!(
            model_id(&json!({})),
            Err(Failure::Protocol(INVALID_PARAMS, _))
        ));
        assert!(matches!(
            model_id(&json!({"modelId": 7})),
            Err(Failure::Protocol(INVALID_PARAMS, _))
        ));
        assert_eq!(
            model_id(&json!({"modelId": "base"})).ok().as_deref(),
            Some("base")
        );
    }
}
