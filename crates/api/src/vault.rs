//! The Key Vault data plane on `{vault}.vault.{suffix}`.
//!
//! This slice serves the authentication contract the SDKs depend on: a request without a
//! valid token gets 401 with the challenge `Bearer authorization="{authority}/{tenant}",
//! resource="https://vault.{suffix}[:port]"`. The keys API itself is the Key Vault issue.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use coffer_domain::identity::{AuthError, Plane};
use http::StatusCode;
use serde_json::json;

use crate::AppState;
use crate::arm::bearer;

fn kv_error(status: StatusCode, code: &str, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .header(
            "x-ms-request-id",
            coffer_crypto::random::uuid().unwrap_or_default(),
        )
        .body(Body::from(
            json!({"error": {"code": code, "message": message}}).to_string(),
        ))
        .unwrap_or_default()
}

fn challenge(state: &AppState, e: AuthError) -> Response {
    let message = match e {
        AuthError::Missing => "AKV10000: Request is missing a Bearer or PoP token.".to_string(),
        other => format!("AKV10022: Invalid audience, issuer or token: {other}."),
    };
    let mut r = kv_error(StatusCode::UNAUTHORIZED, "Unauthorized", &message);
    let v = format!(
        "Bearer authorization=\"{}/{}\", resource=\"{}\"",
        state.endpoints.origin,
        state.identity.tenant_id(),
        state.endpoints.vault_resource()
    );
    if let Ok(h) = http::HeaderValue::from_str(&v) {
        r.headers_mut().insert(http::header::WWW_AUTHENTICATE, h);
    }
    r
}

pub async fn handle(state: Arc<AppState>, _vault: String, req: Request) -> Response {
    let Some(token) = bearer(req.headers()) else {
        return challenge(&state, AuthError::Missing);
    };
    if let Err(e) = state
        .identity
        .authenticate(token.expose(), Plane::Vault)
        .await
    {
        return challenge(&state, e);
    }
    kv_error(
        StatusCode::NOT_FOUND,
        "NotSupported",
        "The Key Vault keys API is not available on this server yet.",
    )
}
