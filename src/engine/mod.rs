//! The inference engine and the models it runs on.
//!
//! - `models`: the model manager: cold / loading / warm, load with LRU eviction, unload.
//! - `inference`: one run in stages: validate, preprocess, execute, postprocess, record.
//! - `transcript`: what a worker's `json` / `verbose_json` answer means.
//! - `history`: the bounded ring of past runs and their statistics.

pub mod history;
pub mod inference;
pub mod models;
pub mod transcript;
