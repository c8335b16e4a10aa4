//! The Entra-shaped identity plane: OIDC discovery, the client-credentials token endpoint,
//! JWKS, instance discovery and the cloud metadata document the az CLI registers from.
//! Errors use the AADSTS JSON shape: `{"error","error_description","error_codes",...}`.
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use coffer_domain::audit::{AuditIdentity, AuditRecord};
use coffer_domain::identity::TokenError;
use coffer_secret::SecretString;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use crate::body::{BodyError, read_limited};
use crate::{AppState, peer_ip};

const FORM_LIMIT: usize = 64 * 1024;

/// The identity plane's operations, parsed from method and path.
#[derive(Debug, PartialEq, Eq)]
pub enum Endpoint {
    OpenIdConfiguration { tenant: String },
    Token { tenant: String },
    Jwks { tenant: String },
    InstanceDiscovery,
    CloudMetadata,
}

impl Endpoint {
    pub fn parse(method: &Method, path: &str) -> Option<Self> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let get = method == Method::GET;
        match segs.as_slice() {
            ["metadata", "endpoints"] if get => Some(Self::CloudMetadata),
            ["common", "discovery", "instance"] if get => Some(Self::InstanceDiscovery),
            [t, "v2.0", ".well-known", "openid-configuration"] if get => {
                Some(Self::OpenIdConfiguration {
                    tenant: t.to_string(),
                })
            }
            [t, "oauth2", "v2.0", "token"] => Some(Self::Token {
                tenant: t.to_string(),
            }),
            [t, "discovery", "v2.0", "keys"] if get => Some(Self::Jwks {
                tenant: t.to_string(),
            }),
            _ => None,
        }
    }
}

fn json_response(status: StatusCode, v: &Value) -> Response {
    Response::builder()
        .status(status)
        .header(
            http::header::CONTENT_TYPE,
            "application/json; charset=utf-8",
        )
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(Body::from(v.to_string()))
        .unwrap_or_default()
}

/// An AADSTS-shaped error.
fn aad_error(status: StatusCode, error: &str, code: u32, description: &str) -> Response {
    let trace = coffer_crypto::random::uuid().unwrap_or_default();
    json_response(
        status,
        &json!({
            "error": error,
            "error_description": format!("AADSTS{code}: {description} Trace ID: {trace}"),
            "error_codes": [code],
            "timestamp": coffer_domain::clock::rfc3339(now()),
            "trace_id": trace,
            "correlation_id": trace,
        }),
    )
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn tenant_not_found(tenant: &str) -> Response {
    aad_error(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!(
            "Tenant '{}' not found. Check to make sure you have the correct tenant ID.",
            tenant.chars().take(64).collect::<String>()
        ),
    )
}

pub async fn handle(state: Arc<AppState>, ep: Endpoint, req: Request) -> Response {
    let name = match &ep {
        Endpoint::OpenIdConfiguration { .. } => "OpenIdConfiguration",
        Endpoint::Token { .. } => "Token",
        Endpoint::Jwks { .. } => "Jwks",
        Endpoint::InstanceDiscovery => "InstanceDiscovery",
        Endpoint::CloudMetadata => "CloudMetadata",
    };
    crate::named(serve(state, ep, req).await, name)
}

async fn serve(state: Arc<AppState>, ep: Endpoint, req: Request) -> Response {
    let origin = state.endpoints.origin.clone();
    match ep {
        Endpoint::CloudMetadata => json_response(StatusCode::OK, &cloud_metadata(&state)),
        Endpoint::InstanceDiscovery => {
            let t = state.identity.tenant_id().to_string();
            json_response(
                StatusCode::OK,
                &json!({
                    "tenant_discovery_endpoint": format!("{origin}/{t}/v2.0/.well-known/openid-configuration"),
                    "api-version": "1.1",
                    "metadata": [{"preferred_network": host_port(&origin), "preferred_cache": host_port(&origin), "aliases": [host_port(&origin)]}]
                }),
            )
        }
        Endpoint::OpenIdConfiguration { tenant } => {
            if !state.identity.is_known_tenant(&tenant) {
                return tenant_not_found(&tenant);
            }
            let t = state.identity.tenant_id();
            json_response(
                StatusCode::OK,
                &json!({
                    "issuer": state.identity.issuer(t),
                    "authorization_endpoint": format!("{origin}/{t}/oauth2/v2.0/authorize"),
                    "token_endpoint": format!("{origin}/{t}/oauth2/v2.0/token"),
                    "device_authorization_endpoint": format!("{origin}/{t}/oauth2/v2.0/devicecode"),
                    "jwks_uri": format!("{origin}/{t}/discovery/v2.0/keys"),
                    "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                    "subject_types_supported": ["pairwise"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_post"],
                    "grant_types_supported": ["client_credentials"],
                    "scopes_supported": ["openid", "profile", "email", "offline_access"],
                    "tenant_region_scope": "NA",
                    "cloud_instance_name": host_port(&origin),
                }),
            )
        }
        Endpoint::Jwks { tenant } => {
            if !state.identity.is_known_tenant(&tenant) {
                return tenant_not_found(&tenant);
            }
            json_response(StatusCode::OK, &state.identity.jwks())
        }
        Endpoint::Token { tenant } => token(state, tenant, req).await,
    }
}

fn host_port(origin: &str) -> &str {
    origin.strip_prefix("https://").unwrap_or(origin)
}

/// The single-object cloud metadata document (`az cloud register --endpoint-resource-manager`).
pub fn cloud_metadata(state: &AppState) -> Value {
    let o = &state.endpoints.origin;
    let storage = format!(
        "{}:{}",
        state.endpoints.dns_suffix, state.endpoints.blob_port
    );
    json!({
        "name": "Coffer",
        "portal": format!("{o}/console"),
        "authentication": {
            "loginEndpoint": format!("{o}/"),
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD"
        },
        "media": format!("{o}/"),
        "graphAudience": "https://graph.windows.net/",
        "graph": format!("{o}/"),
        "batch": "https://batch.core.windows.net/",
        "resourceManager": format!("{o}/"),
        "microsoftGraphResourceId": "https://graph.microsoft.com/",
        "sqlManagement": format!("{o}/"),
        "gallery": format!("{o}/"),
        "suffixes": {
            "storage": storage,
            "keyVaultDns": state.endpoints.vault_dns_suffix(),
            "mhsmDns": format!("managedhsm.{}", state.endpoints.dns_suffix),
            "acrLoginServer": "azurecr.io",
            "sqlServerHostname": "database.windows.net"
        }
    })
}

async fn token(state: Arc<AppState>, tenant: String, req: Request) -> Response {
    let ip = peer_ip(&req);
    if req.method() != Method::POST {
        return aad_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request",
            900561,
            "The endpoint only accepts POST requests.",
        );
    }
    let is_form = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let bytes = match read_limited(req.into_body(), FORM_LIMIT).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return aad_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request",
                90014,
                "The request body is too large.",
            );
        }
        Err(BodyError::Io) => {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                90014,
                "The request body could not be read.",
            );
        }
    };
    if !is_form {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must be application/x-www-form-urlencoded.",
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&bytes) else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body is not a valid form.",
        );
    };
    let form: HashMap<String, String> = form.into_iter().collect();
    let field = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let Some(grant) = field("grant_type") else {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    if grant != "client_credentials" {
        return aad_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            70003,
            "The app requested an unsupported grant type; only 'client_credentials' is supported.",
        );
    }
    for k in ["client_id", "client_secret", "scope"] {
        if field(k).is_none() {
            return aad_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                900144,
                &format!("The request body must contain the following parameter: '{k}'."),
            );
        }
    }
    let client_id = field("client_id").unwrap_or_default().to_string();
    let secret = SecretString::new(field("client_secret").unwrap_or_default().to_string());
    let scope = field("scope").unwrap_or_default().to_string();
    let result = state
        .identity
        .client_credentials(&tenant, &client_id, &secret, &scope)
        .await;
    let (resp, status, message) = match result {
        Ok(t) => (
            json_response(
                StatusCode::OK,
                &json!({
                    "token_type": "Bearer",
                    "expires_in": t.expires_in,
                    "ext_expires_in": t.expires_in,
                    "access_token": t.access_token.expose(),
                }),
            ),
            200u16,
            "token issued".to_string(),
        ),
        Err(e) => {
            let msg = e.to_string();
            let r = match &e {
                TokenError::InvalidRequest(m) => {
                    aad_error(StatusCode::BAD_REQUEST, "invalid_request", 900144, m)
                }
                TokenError::TenantNotFound(t) => tenant_not_found(t),
                TokenError::UnauthorizedClient(c) => aad_error(
                    StatusCode::BAD_REQUEST,
                    "unauthorized_client",
                    700016,
                    &format!("Application with identifier '{c}' was not found in the directory."),
                ),
                TokenError::InvalidClient => aad_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
                ),
                TokenError::InvalidResource(r) => aad_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_resource",
                    500011,
                    &format!("The resource principal named {r} was not found in the tenant."),
                ),
                TokenError::UnsupportedGrantType(_) => aad_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    70003,
                    "The app requested an unsupported grant type.",
                ),
                TokenError::Domain(d) => {
                    tracing::error!(error = %d, "token endpoint failure");
                    aad_error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "server_error",
                        90100,
                        "An internal error occurred.",
                    )
                }
            };
            let status = r.status().as_u16();
            (r, status, msg)
        }
    };
    let rec = AuditRecord {
        time: state.clock.now(),
        resource_id: format!("/tenants/{}", state.identity.tenant_id()),
        operation_name: "SignIn".into(),
        result_type: if status == 200 { "Success" } else { "Failure" }.into(),
        result_signature: status,
        caller_ip_address: ip,
        identity: AuditIdentity {
            tid: state.identity.tenant_id().into(),
            oid: String::new(),
            appid: client_id.chars().take(64).collect(),
            ..Default::default()
        },
        request_id: coffer_crypto::random::uuid().unwrap_or_default(),
        correlation_id: String::new(),
        message,
        ..Default::default()
    };
    if let Err(e) = state.audit.record(&rec).await {
        tracing::error!(error = %e, "audit write failed; refusing the sign-in");
        return aad_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            90100,
            "An internal error occurred.",
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_endpoints() {
        assert_eq!(
            Endpoint::parse(&Method::POST, "/t1/oauth2/v2.0/token"),
            Some(Endpoint::Token {
                tenant: "t1".into()
            })
        );
        assert_eq!(
            Endpoint::parse(&Method::GET, "//t1/v2.0/.well-known/openid-configuration"),
            Some(Endpoint::OpenIdConfiguration {
                tenant: "t1".into()
            })
        );
        assert_eq!(
            Endpoint::parse(&Method::GET, "/metadata/endpoints"),
            Some(Endpoint::CloudMetadata)
        );
        assert_eq!(Endpoint::parse(&Method::GET, "/subscriptions"), None);
    }
}
