//! The identity service: principals, the client-credentials token grant, token validation.
//!
//! Tokens are RS256 JWTs signed by the server key with claims `aud` (the requested scope
//! without `/.default`), `iss`, `iat`, `nbf`, `exp`, `tid`, `oid`, `sub`, `appid`, `idtyp`,
//! `ver`, `uti`. A token is accepted by a plane only when its signature, issuer, tenant,
//! audience (one of that plane's audiences), validity window and principal all check out.
use std::sync::Arc;

use coffer_crypto::{jwt::SigningKey, password, random};
use coffer_secret::{SecretBytes, SecretString};
use serde_json::{Value, json};

use crate::clock::Clock;
use crate::model::{Principal, PrincipalKind};
use crate::store::MetaStore;
use crate::{DomainError, Result};

/// Lifetime of an access token, in seconds (Entra's default is about an hour).
pub const TOKEN_LIFETIME: i64 = 3599;
/// Allowed clock skew for `nbf`.
const SKEW: i64 = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    Management,
    Vault,
    Storage,
}

/// The audiences each plane accepts, without trailing slashes.
#[derive(Debug, Clone, Default)]
pub struct Audiences {
    pub management: Vec<String>,
    pub vault: Vec<String>,
    pub storage: Vec<String>,
}

impl Audiences {
    fn for_plane(&self, plane: Plane) -> &[String] {
        match plane {
            Plane::Management => &self.management,
            Plane::Vault => &self.vault,
            Plane::Storage => &self.storage,
        }
    }

    fn is_known(&self, resource: &str) -> bool {
        let r = resource.trim_end_matches('/');
        [Plane::Management, Plane::Vault, Plane::Storage]
            .iter()
            .any(|p| self.for_plane(*p).iter().any(|a| a.eq_ignore_ascii_case(r)))
    }
}

/// Who is calling, established from a validated token.
#[derive(Debug, Clone)]
pub struct Caller {
    pub tenant_id: String,
    pub object_id: String,
    pub app_id: String,
    pub kind: PrincipalKind,
    pub is_admin: bool,
}

/// Why a bearer token was refused (all map to 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the request is missing a bearer token")]
    Missing,
    #[error("the access token is malformed")]
    Malformed,
    #[error("the access token signature is invalid")]
    BadSignature,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not yet valid")]
    NotYetValid,
    #[error("the access token audience is invalid for this service")]
    WrongAudience,
    #[error("the access token is from a wrong issuer or tenant")]
    WrongIssuer,
    #[error("the principal of the access token no longer exists")]
    UnknownPrincipal,
}

/// Errors of the token endpoint, in OAuth2 terms.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("tenant '{0}' not found")]
    TenantNotFound(String),
    #[error("application '{0}' was not found in the directory")]
    UnauthorizedClient(String),
    #[error("invalid client secret provided")]
    InvalidClient,
    #[error("the resource principal named {0} was not found in the tenant")]
    InvalidResource(String),
    #[error("the grant type '{0}' is not supported")]
    UnsupportedGrantType(String),
    #[error(transparent)]
    Domain(#[from] DomainError),
}

/// The claims of a token whose signature verified. Tokens are immutable, so a verified
/// token's claims are remembered (keyed by SHA-256 of the token) and the RSA verification and
/// JSON parsing are not redone on every request; every time-, tenant-, audience- and
/// principal-dependent check still runs on each use.
#[derive(Clone)]
struct VerifiedClaims {
    exp: i64,
    nbf: i64,
    tid: String,
    iss: String,
    aud: String,
    oid: String,
}

const VERIFIED_CACHE_MAX: usize = 10_000;

pub struct IssuedToken {
    pub access_token: SecretString,
    pub expires_in: i64,
}

pub struct IdentityService {
    store: Arc<dyn MetaStore>,
    clock: Arc<Clock>,
    signing: SigningKey,
    secret_key: SecretBytes,
    tenant_id: String,
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], VerifiedClaims>>,
    /// Base of the token issuer, independent of ports so tokens survive a restart:
    /// `iss` = `{issuer_base}/{tenant}/v2.0`.
    issuer_base: String,
    audiences: Audiences,
}

impl IdentityService {
    pub fn new(
        store: Arc<dyn MetaStore>,
        clock: Arc<Clock>,
        signing: SigningKey,
        secret_key: SecretBytes,
        tenant_id: String,
        issuer_base: String,
        audiences: Audiences,
    ) -> Self {
        Self {
            store,
            clock,
            signing,
            secret_key,
            tenant_id,
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
            issuer_base,
            audiences,
        }
    }

    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    pub fn issuer(&self, tenant: &str) -> String {
        format!("{}/{}/v2.0", self.issuer_base, tenant)
    }

    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.signing.jwk()] })
    }

    pub fn is_known_tenant(&self, tenant: &str) -> bool {
        tenant.eq_ignore_ascii_case(&self.tenant_id)
    }

    /// Create a service principal; the secret is returned once and stored only as a verifier.
    pub async fn create_service_principal(
        &self,
        display_name: &str,
        is_admin: bool,
    ) -> Result<(Principal, SecretString)> {
        validate_display_name(display_name)?;
        let secret = SecretString::new(random::token()?);
        let p = Principal {
            object_id: random::uuid()?,
            tenant_id: self.tenant_id.clone(),
            kind: PrincipalKind::ServicePrincipal,
            display_name: display_name.to_string(),
            client_id: Some(random::uuid()?),
            secret_verifier: Some(password::hash_client_secret(
                &self.secret_key,
                secret.expose(),
            )),
            username: None,
            password_verifier: None,
            is_admin,
            resource_id: None,
            created: self.clock.now(),
        };
        self.store.insert_principal(&p).await?;
        Ok((p, secret))
    }

    /// Create a console user with an Argon2id password verifier.
    pub async fn create_user(
        &self,
        username: &str,
        password_: &SecretString,
        is_admin: bool,
    ) -> Result<Principal> {
        validate_username(username)?;
        let pw = password_.expose();
        if pw.chars().count() < 12 || pw.len() > 256 {
            return Err(DomainError::InvalidProperty(
                "the password must be 12 to 256 characters long".into(),
            ));
        }
        if self
            .store
            .find_principal_by_username(username)
            .await?
            .is_some()
        {
            return Err(DomainError::Conflict(format!(
                "the user '{username}' already exists"
            )));
        }
        let p = Principal {
            object_id: random::uuid()?,
            tenant_id: self.tenant_id.clone(),
            kind: PrincipalKind::User,
            display_name: username.to_string(),
            client_id: None,
            secret_verifier: None,
            username: Some(username.to_string()),
            password_verifier: Some(password::hash_password(pw)?),
            is_admin,
            resource_id: None,
            created: self.clock.now(),
        };
        self.store.insert_principal(&p).await?;
        Ok(p)
    }

    /// Create the principal behind a managed identity (system- or user-assigned).
    pub async fn create_managed_identity(
        &self,
        resource_id: &str,
        display_name: &str,
    ) -> Result<Principal> {
        let p = Principal {
            object_id: random::uuid()?,
            tenant_id: self.tenant_id.clone(),
            kind: PrincipalKind::ManagedIdentity,
            display_name: display_name.to_string(),
            client_id: Some(random::uuid()?),
            secret_verifier: None,
            username: None,
            password_verifier: None,
            is_admin: false,
            resource_id: Some(resource_id.to_string()),
            created: self.clock.now(),
        };
        self.store.insert_principal(&p).await?;
        Ok(p)
    }

    /// The OAuth2 client-credentials grant.
    pub async fn client_credentials(
        &self,
        tenant: &str,
        client_id: &str,
        client_secret: &SecretString,
        scope: &str,
    ) -> std::result::Result<IssuedToken, TokenError> {
        if !self.is_known_tenant(tenant) {
            return Err(TokenError::TenantNotFound(truncate(tenant)));
        }
        let resource = scope
            .split_whitespace()
            .find_map(|s| s.strip_suffix("/.default"))
            .ok_or_else(|| {
                TokenError::InvalidRequest(
                    "the 'scope' parameter must name a resource followed by '/.default'".into(),
                )
            })?;
        if !self.audiences.is_known(resource) {
            return Err(TokenError::InvalidResource(truncate(resource)));
        }
        let principal = self
            .store
            .find_principal_by_client_id(client_id)
            .await?
            .filter(|p| p.kind == PrincipalKind::ServicePrincipal && p.tenant_id == self.tenant_id)
            .ok_or_else(|| TokenError::UnauthorizedClient(truncate(client_id)))?;
        let verified = principal.secret_verifier.as_deref().is_some_and(|v| {
            password::verify_client_secret(&self.secret_key, client_secret.expose(), v)
        });
        if !verified {
            return Err(TokenError::InvalidClient);
        }
        let token = self.issue(&principal, resource)?;
        Ok(token)
    }

    /// Issue a token for `principal` with audience `resource` (internal callers, e.g. the
    /// storage service acting as an account's managed identity).
    pub fn issue(&self, principal: &Principal, resource: &str) -> Result<IssuedToken> {
        let now = self.clock.now();
        let claims = json!({
            "aud": resource,
            "iss": self.issuer(&principal.tenant_id),
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME,
            "tid": principal.tenant_id,
            "oid": principal.object_id,
            "sub": principal.object_id,
            "appid": principal.client_id.clone().unwrap_or_default(),
            "idtyp": if principal.kind == PrincipalKind::User { "user" } else { "app" },
            "ver": "2.0",
            "uti": coffer_crypto::jwt::token_id()?,
        });
        Ok(IssuedToken {
            access_token: SecretString::new(self.signing.sign(&claims)?),
            expires_in: TOKEN_LIFETIME,
        })
    }

    /// Validate a bearer token for `plane`.
    pub async fn authenticate(
        &self,
        token: &str,
        plane: Plane,
    ) -> std::result::Result<Caller, AuthError> {
        let claims = self.verified_claims(token)?;
        let now = self.clock.now();
        if now >= claims.exp {
            return Err(AuthError::Expired);
        }
        if claims.nbf > now + SKEW {
            return Err(AuthError::NotYetValid);
        }
        if !self.is_known_tenant(&claims.tid) || claims.iss != self.issuer(&claims.tid) {
            return Err(AuthError::WrongIssuer);
        }
        let aud = claims.aud.trim_end_matches('/');
        if !self
            .audiences
            .for_plane(plane)
            .iter()
            .any(|a| a.eq_ignore_ascii_case(aud))
        {
            return Err(AuthError::WrongAudience);
        }
        let principal = self
            .store
            .get_principal(&claims.oid)
            .await
            .map_err(|_| AuthError::UnknownPrincipal)?
            .ok_or(AuthError::UnknownPrincipal)?;
        Ok(Caller {
            tenant_id: principal.tenant_id,
            object_id: principal.object_id,
            app_id: principal.client_id.unwrap_or_default(),
            kind: principal.kind,
            is_admin: principal.is_admin,
        })
    }

    fn verified_claims(&self, token: &str) -> std::result::Result<VerifiedClaims, AuthError> {
        let mut key = [0u8; 32];
        key.copy_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()).as_ref(),
        );
        if let Some(c) = self.verified.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let claims = self.signing.verify(token).map_err(|e| match e {
            coffer_crypto::jwt::TokenError::Malformed => AuthError::Malformed,
            coffer_crypto::jwt::TokenError::BadSignature => AuthError::BadSignature,
        })?;
        let s = |k: &str| {
            claims
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let n = |k: &str| claims.get(k).and_then(Value::as_i64);
        let (Some(exp), Some(nbf)) = (n("exp"), n("nbf")) else {
            return Err(AuthError::Malformed);
        };
        let c = VerifiedClaims {
            exp,
            nbf,
            tid: s("tid"),
            iss: s("iss"),
            aud: s("aud"),
            oid: s("oid"),
        };
        if let Ok(mut m) = self.verified.lock() {
            if m.len() >= VERIFIED_CACHE_MAX {
                let now = self.clock.now();
                m.retain(|_, v| v.exp > now);
                if m.len() >= VERIFIED_CACHE_MAX {
                    m.clear();
                }
            }
            m.insert(key, c.clone());
        }
        Ok(c)
    }

    /// Check a console user's password (Argon2id, constant-time).
    pub async fn verify_user_password(
        &self,
        username: &str,
        pw: &SecretString,
    ) -> Result<Option<Principal>> {
        let p = self.store.find_principal_by_username(username).await?;
        let verifier = p.as_ref().and_then(|p| p.password_verifier.clone());
        // Argon2 (19 MiB, about 50 ms) runs on the blocking pool, two at a time: sign-ins
        // neither stall the async workers that serve every other request nor add up memory.
        static ARGON2: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);
        let _permit = ARGON2
            .acquire()
            .await
            .map_err(|_| DomainError::Internal("password verification is closed".into()))?;
        let pw = pw.clone();
        // An unknown user costs the same Argon2 work as a known one (no timing oracle).
        let ok = tokio::task::spawn_blocking(move || match &verifier {
            Some(v) => password::verify_password(pw.expose(), v),
            None => {
                let _ = password::verify_password(pw.expose(), password::DUMMY_VERIFIER);
                false
            }
        })
        .await
        .map_err(|_| DomainError::Internal("password verification failed".into()))?;
        Ok(p.filter(|_| ok))
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(128).collect()
}

fn validate_display_name(name: &str) -> Result<()> {
    if name.trim().is_empty() || name.chars().count() > 120 || name.chars().any(char::is_control) {
        return Err(DomainError::InvalidProperty(
            "displayName must be 1 to 120 printable characters".into(),
        ));
    }
    Ok(())
}

fn validate_username(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(DomainError::InvalidName {
            kind: "user",
            name: truncate(name),
            rule: "1-64 characters of letters, digits, '.', '_', '-' and '@'",
        })
    }
}
