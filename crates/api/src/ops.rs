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

/// `GET /readyz`: 200 once the listeners accept (this answer proves it), the root key is
/// unsealed (the services exist only then) and the metadata store answers; else 503.
pub async fn readyz(state: &Arc<AppState>) -> Response {
    let (status, text) = match state.mgmt.store_ready().await {
        Ok(()) => (http::StatusCode::OK, "ready\n".to_string()),
        Err(e) => {
            tracing::error!(error = %e, "readiness: the metadata store does not answer");
            (
                http::StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the metadata store does not answer\n".to_string(),
            )
        }
    };
    crate::named(
        Response::builder()
            .status(status)
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(text))
            .unwrap_or_default(),
        "Ready",
    )
}

pub fn route(_state: &Arc<AppState>, req: &Request, path: &str) -> Option<Response> {
    if req.method() != http::Method::GET {
        return None;
    }
    let text = match path {
        "/healthz" => "ok\n",
        _ => return None,
    };
    Some(
        Response::builder()
            .header(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(text))
            .unwrap_or_default(),
    )
}
