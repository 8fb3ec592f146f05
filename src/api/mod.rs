//! Route handlers, one file per API family. Handlers parse the request, call into the pool,
//! and shape the JSON; they never touch sockets or processes.
//!
//! - `service`: `GET /`, `GET /health`, `GET /api/v1/providers`, `GET /api/v1/status`.
//! - `transcriptions`: `POST /api/v1/transcriptions`.
//! - `openapi`: `GET /openapi` (HTML) and `GET /openapi/json` (the OpenAPI 3.1 document).

pub mod openapi;
pub mod service;
pub mod transcriptions;
