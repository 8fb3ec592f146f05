//! `GET /metrics`: the Prometheus page (see `crate::metrics` for what is on it).

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

/// The content type of Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn page(engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::text(
        CONTENT_TYPE,
        engine.metrics.render(&engine.pool.gauges()).into_bytes(),
    ))
}
