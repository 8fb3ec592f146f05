//! `GET /api/capacity`: how much more work the pool can take now (`Engine::capacity`, which
//! `/health` and the `checkCapacity` RPC share).

use std::sync::Arc;

use crate::engine::Engine;
use crate::error::ApiError;
use crate::http::{Incoming, Reply};

pub fn get(engine: &Arc<Engine>, _rq: &mut Incoming) -> Result<Reply, ApiError> {
    Ok(Reply::ok(&engine.capacity(None)?))
}
