//! JSON-RPC framing on arbitrary bytes: no panic, and every refusal is a JSON-RPC 2.0 error
//! response with an integer code.
#![no_main]

use inference_server_manager::rpc::{parse, Message};
use libfuzzer_sys::fuzz_target;

fn check(one: &Result<inference_server_manager::rpc::Call, serde_json::Value>) {
    if let Err(response) = one {
        assert_eq!(response["jsonrpc"], "2.0");
        assert!(response["error"]["code"].is_i64(), "{response}");
    }
}

fuzz_target!(|data: &[u8]| {
    match parse(data) {
        Message::Single(one) => check(&one),
        Message::Batch(batch) => batch.iter().for_each(check),
    }
});
