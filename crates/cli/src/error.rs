//! Errors of the client commands and the exit codes they map to.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other error (network, TLS, server error, bad local file) |
//! | 2 | usage error (unknown flag, missing argument) |
//! | 3 | `coffer audit verify`: the audit log is not intact |
//! | 4 | not found (HTTP 404: resource group, vault, key, account, container, blob) |
//! | 5 | refused: authentication or authorization failed (HTTP 401/403, including a disabled or unreachable customer-managed key) |
//! | 6 | conflict or failed precondition (HTTP 409/412: already exists, changed meanwhile) |
use std::fmt;

/// Exit code for a 404.
pub const EXIT_NOT_FOUND: u8 = 4;
/// Exit code for a 401 or 403.
pub const EXIT_REFUSED: u8 = 5;
/// Exit code for a 409 or 412.
pub const EXIT_CONFLICT: u8 = 6;

/// The exit codes, as shown in `coffer --help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  error (network, TLS, server error, local file)
  2  usage error (unknown flag, missing argument)
  3  coffer audit verify: the audit log is not intact
  4  not found (HTTP 404)
  5  refused: authentication or authorization failed (HTTP 401/403, including a disabled or
     unreachable customer-managed key, e.g. KeyVaultEncryptionKeyNotFound)
  6  conflict or failed precondition (HTTP 409/412)

Errors go to standard error as `coffer: (AzureErrorCode) message [HTTP status, request id]`.";

/// An error answer of one of the server's APIs (ARM, Key Vault, Blob, token endpoint).
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    /// Azure's error code (`ResourceNotFound`, `KeyVaultEncryptionKeyNotFound`, ...).
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

impl ApiError {
    pub fn exit_code(&self) -> u8 {
        match self.status {
            404 => EXIT_NOT_FOUND,
            401 | 403 => EXIT_REFUSED,
            409 | 412 => EXIT_CONFLICT,
            _ => 1,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}) {} [HTTP {}", self.code, self.message, self.status)?;
        if let Some(r) = &self.request_id {
            write!(f, ", request id {r}")?;
        }
        write!(f, "]")
    }
}

impl std::error::Error for ApiError {}

/// A usage error found after parsing (flags that do not fit together): exit code 2.
#[derive(Debug, Clone)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Fail with a usage error (exit code 2).
pub fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(msg.into()))
}

/// The exit code for an error: the first [`ApiError`] or [`UsageError`] in its chain
/// decides, else 1.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    for c in e.chain() {
        if let Some(a) = c.downcast_ref::<ApiError>() {
            return a.exit_code();
        }
        if c.downcast_ref::<UsageError>().is_some() {
            return 2;
        }
    }
    1
}

/// A next step for errors users commonly meet, shown after the error.
pub fn hint_of(e: &anyhow::Error) -> Option<&'static str> {
    let a = e.chain().find_map(|c| c.downcast_ref::<ApiError>())?;
    if a.status == 403 && a.message.contains("Microsoft.KeyVault/vaults/keys") {
        return Some(
            "Owner and Contributor grant no data actions. Give yourself a Key Vault data role: \
coffer role assignment create --assignee-object-id $(coffer account show --query user.objectId -o tsv) \
--role \"Key Vault Crypto Officer\" --scope <vault id> (or create vaults with --grant-self).",
        );
    }
    if a.code == "AuthorizationPermissionMismatch" {
        return Some(
            "--auth-mode login needs a Storage Blob Data role on the account (storage account \
create --grant-self, or role assignment create --role \"Storage Blob Data Contributor\"); the \
default --auth-mode key signs requests with the account key instead.",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let e = |status| ApiError {
            status,
            code: "X".into(),
            message: "m".into(),
            request_id: None,
        };
        assert_eq!(e(404).exit_code(), 4);
        assert_eq!(e(403).exit_code(), 5);
        assert_eq!(e(401).exit_code(), 5);
        assert_eq!(e(409).exit_code(), 6);
        assert_eq!(e(500).exit_code(), 1);
        let wrapped = anyhow::Error::new(e(404)).context("downloading");
        assert_eq!(exit_code_of(&wrapped), 4);
        assert_eq!(exit_code_of(&anyhow::anyhow!("plain")), 1);
        assert_eq!(exit_code_of(&usage("bad flags")), 2);
        assert_eq!(e(403).to_string(), "(X) m [HTTP 403]");
    }
}
