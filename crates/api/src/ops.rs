//! Health and readiness. (Prometheus metrics come with the monitoring issue.)
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;

use crate::AppState;

pub fn route(_state: &Arc<AppState>, req: &Request, path: &str) -> Option<Response> {
    if req.method() != http::Method::GET {
        return None;
    }
    let text = match path {
        "/healthz" => "ok\n",
        "/readyz" => "ready\n",
        _ => return None,
    };
    Some(
        Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(text))
            .unwrap_or_default(),
    )
}
