//! The Blob data plane listener (path-style `/{account}/...` and host-style
//! `{account}.blob.{suffix}`). Errors are XML `<Error><Code/><Message/></Error>` with an
//! `x-ms-error-code` header, as the SDKs require. Accounts and the Blob API come with the
//! blob storage issue; until then every request names an account that does not exist.
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use http::StatusCode;

use crate::AppState;

pub fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    let request_id = coffer_crypto::random::uuid().unwrap_or_default();
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>{code}</Code><Message>{}\nRequestId:{request_id}</Message></Error>",
        xml_escape(message)
    );
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/xml")
        .header("x-ms-error-code", code)
        .header("x-ms-request-id", request_id)
        .header("x-ms-version", "2026-10-06")
        .body(Body::from(body))
        .unwrap_or_default()
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

pub async fn handle(state: Arc<AppState>, req: Request) -> Response {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let account = match state.endpoints.account_of_host(&host) {
        Some(a) => Some(a.to_string()),
        None => req
            .uri()
            .path()
            .split('/')
            .find(|s| !s.is_empty())
            .map(str::to_string),
    };
    match account {
        None => xml_error(
            StatusCode::BAD_REQUEST,
            "InvalidUri",
            "The request URI does not name a storage account.",
        ),
        Some(_) => xml_error(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            "The specified resource does not exist.",
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes() {
        assert_eq!(super::xml_escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }
}
