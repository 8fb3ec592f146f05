//! # inference-server-manager
//!
//! Keeps a pool of whisper.cpp `whisper-server` processes alive on loopback ports and serves
//! speech-to-text over HTTP in front of them. The contract is `SPEC.md`; this is the map.
//!
//! Requests flow one way: `http` (or `rpc`) -> `api` -> `engine` -> `pool` -> a worker process.
//!
//! | module | its job |
//! |---|---|
//! | [`cli`] | the command line: `serve`, `config path/show/init/edit`, `check` |
//! | [`settings`] | the JSON5 file, env vars and flags merged over defaults; XDG paths |
//! | [`logging`] | the manager's console log at `LOG_LEVEL` |
//! | [`app`] | wiring: worker plan -> pool + monitor -> HTTP server; graceful shutdown |
//! | [`http::server`] | the `tiny_http` acceptor (rebinds if it dies) and the fixed request threads |
//! | [`http::request`] | one request's view; the bounded, deadline-checked body read |
//! | [`http::response`] | `Reply` and the headers every response carries (CORS, request id) |
//! | [`http::router`] | the route table and the API-key check |
//! | [`http::multipart`] | a streaming, bounded `multipart/form-data` parser |
//! | [`api`] | route handlers by family: service/health/status, transcriptions, OpenAI, metrics, OpenAPI |
//! | [`engine::models`] | the model manager: cold / loading / warm, LRU eviction, unload by draining |
//! | [`engine::inference`] | one run in stages: validate, preprocess, execute, postprocess, record |
//! | [`engine::history`] | the bounded ring of past runs and all-time statistics |
//! | [`engine::transcript`] | what a worker's `json` / `verbose_json` answer means |
//! | [`pool::state`] | `PoolState` behind the one `Mutex`: workers, slots, queue; pure logic |
//! | [`pool::monitor`] | the thread that spawns, health-checks, rotates, reaps and stops workers |
//! | [`pool::dispatch`] | a request's side: bounded FIFO wait for an idle worker, one retry |
//! | [`pool::process`] | spawn in an own process group, log pump, signals, pid records, orphans |
//! | [`pool::client`] | the whisper-server protocol (`/health`, multipart `/inference`) via `ureq` |
//! | [`metrics`] | Prometheus counters and histograms with bounded labels; the `/metrics` page |
//! | [`rpc`] | the JSON-RPC 2.0 dispatcher (`POST /rpc`), rack mode's TCP transport, orchestrator registration |
//! | [`audio`] | lenient base64, audio container sniffing, WAV duration |
//! | [`auth`] | constant-time API key check |
//! | [`error`] | `ApiError`, the one error enum, and its HTTP status and JSON body |
//! | [`clock`] | RFC 3339 timestamps |
//!
//! The stub worker (`src/bin/stub-whisper-server.rs`) speaks the same protocol as
//! whisper-server and lets the manager run, and be tested, without a model.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod audio;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod engine;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod pool;
pub mod rpc;
pub mod settings;
