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

/// A request body the handler may read or drop; what it leaves unread stays here, so that
/// the server can drain it (up to [`DRAIN_CAP`]) before answering. A client that is still
/// sending a body the server refused (a 412, a 403, ...) then reads the error; if the
/// server answered and closed at once, its unread bytes would reset the connection and the
/// client would see a broken pipe instead (the SDKs then retry, and report a network error).
pub struct Retained(std::sync::Arc<std::sync::Mutex<Option<Body>>>);

impl Retained {
    /// Wrap `body`: the returned body is the one to hand on.
    pub fn wrap(body: Body) -> (Self, Body) {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(Some(body)));
        (Self(shared.clone()), Body::new(Shared(shared)))
    }

    /// Read and discard what the handler left unread (at most [`DRAIN_CAP`] bytes).
    pub async fn drain(self) {
        let Some(mut body) = self.0.lock().ok().and_then(|mut b| b.take()) else {
            return;
        };
        let mut seen = 0usize;
        while !http_body::Body::is_end_stream(&body) && seen <= DRAIN_CAP {
            match body.frame().await {
                Some(Ok(f)) => seen = seen.saturating_add(f.data_ref().map_or(0, |d| d.len())),
                _ => return,
            }
        }
    }
}

/// The body handed to the handler: frames come from the retained one.
struct Shared(std::sync::Arc<std::sync::Mutex<Option<Body>>>);

impl http_body::Body for Shared {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        match self.0.lock() {
            Ok(mut g) => match g.as_mut() {
                Some(b) => std::pin::Pin::new(b).poll_frame(cx),
                None => std::task::Poll::Ready(None),
            },
            Err(_) => std::task::Poll::Ready(Some(Err(axum::Error::new("request body lock")))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .map_or(true, |g| g.as_ref().is_none_or(|b| b.is_end_stream()))
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0
            .lock()
            .ok()
            .and_then(|g| g.as_ref().map(|b| b.size_hint()))
            .unwrap_or_default()
    }
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
