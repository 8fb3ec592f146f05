//! `GET /metrics`: the Prometheus page (see `crate::metrics` for what is on it).

use crate::app::App;
use crate::error::ApiError;
use crate::http::request::Incoming;
use crate::http::response::Reply;

/// The content type of Prometheus' text exposition format.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn page(app: &App, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::text(
        CONTENT_TYPE,
        app.metrics.render(&app.pool.gauges()).into_bytes(),
    ))
}
