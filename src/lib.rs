//! # inference-server-manager
//!
//! Keeps a pool of whisper.cpp `whisper-server` processes alive on loopback ports and serves
//! speech-to-text over HTTP in front of them. The README is the user's contract;
//! `ARCHITECTURE.md` tells where things live and why; this is the map.
//!
//! Requests flow one way, and so do the imports: `http` (or rack TCP) -> `api` (or `rpc`) ->
//! `engine` -> `pool` -> a worker process. `http` imports nothing of the crate; `app` wires the
//! layers together and nothing imports it.
//!
//! | module | its job |
//! |---|---|
//! | [`cli`] | the command line: `serve`, `config path/show/init/edit`, `check` |
//! | [`settings`] | the JSON5 file, env vars and flags merged over documented defaults; XDG paths |
//! | [`logging`] | the manager's console log at `LOG_LEVEL`: a bounded queue and a writer thread, never blocking |
//! | [`app`] | wiring: worker plan -> pool + monitor -> engine -> HTTP server; graceful shutdown; the exit-code error |
//! | [`http`] | a small HTTP library handed a `Handler`: acceptor, request threads, bounded bodies, replies, multipart |
//! | [`api`] | the route table, `Api` (the `Handler`: routing, keys, error shapes, access log) and the handlers by family |
//! | [`rpc`] | JSON-RPC 2.0 over the engine's operations (`POST /rpc`, rack mode's TCP), orchestrator registration |
//! | [`engine`] | `Engine`, the request context; the operations both transports call; transcription in stages (decode, chunks in parallel, merge); progress; history |
//! | [`pool`] | `Pool` and its private `PoolState`; the monitor thread; dispatch and queue; models; processes and their logs; worker client |
//! | [`metrics`] | Prometheus counters and histograms with bounded labels; the `/metrics` page |
//! | [`audio`] | base64 and container sniffing; 16 kHz PCM; WAV decoding and resampling; ffmpeg as a child process; cutting at pauses |
//! | [`auth`] | constant-time API key check |
//! | [`error`] | `ApiError`, what went wrong with one request, and its status and JSON bodies |
//! | [`clock`] | RFC 3339 timestamps |
//!
//! The stub worker (`src/bin/stub-whisper-server.rs`) speaks the same protocol as
//! whisper-server and lets the manager run, and be tested, without a model.

// Four exceptions, each beside its reason: `pool::process::die_with_the_manager` sets
// PR_SET_PDEATHSIG in a worker between fork and exec, which only `pre_exec` (unsafe) can do;
// `http::peer` reads TCP_INFO, `app::use_the_system_futex_table` makes a `prctl` call and
// `app::keep_freed_memory_for_the_next_request` a `mallopt` one, none of which nix wraps.
#![deny(unsafe_code)]

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
