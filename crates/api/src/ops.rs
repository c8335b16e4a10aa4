//! Health, readiness and Prometheus metrics.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;

use crate::AppState;

/// `GET /metrics`: Prometheus text format, for tenant administrators (a management-plane
/// bearer token; Prometheus' `authorization` / `bearer_token_file` settings send it).
pub async fn metrics(state: &Arc<AppState>, headers: &http::HeaderMap) -> Response {
    let token = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default()
        .to_string();
    let status = match state
        .identity
        .authenticate(&token, coffer_domain::identity::Plane::Management)
        .await
    {
        Ok(c) if c.is_admin => None,
        Ok(_) => Some(http::StatusCode::FORBIDDEN),
        Err(_) => Some(http::StatusCode::UNAUTHORIZED),
    };
    if let Some(s) = status {
        return Response::builder()
            .status(s)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(
                "metrics are for tenant administrators: send a management-plane bearer token\n",
            ))
            .unwrap_or_default();
    }
    let text = state.metrics.render(state).await;
    crate::named(
        Response::builder()
            .header(
                http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Body::from(text))
            .unwrap_or_default(),
        "GetMetrics",
    )
}

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
