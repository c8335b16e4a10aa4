//! Bounded reading of request bodies. A body over the limit is drained (up to a hard cap, so
//! the client can read the error instead of seeing a reset) and reported as too large.
use axum::body::Body;
use http_body_util::BodyExt;

/// Bodies beyond this are not even drained: the connection is dropped.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

pub enum BodyError {
    TooLarge,
    Io,
}

pub async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, BodyError> {
    let mut body = body;
    let mut out = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| BodyError::Io)?;
        if let Ok(data) = frame.into_data() {
            seen = seen.saturating_add(data.len());
            if seen > DRAIN_CAP {
                return Err(BodyError::TooLarge);
            }
            if seen <= limit {
                out.extend_from_slice(&data);
            }
        }
    }
    if seen > limit {
        Err(BodyError::TooLarge)
    } else {
        Ok(out)
    }
}
