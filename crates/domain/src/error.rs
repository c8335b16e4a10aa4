//! Domain errors, named after conditions. Each wire protocol maps them in one exhaustive match.

#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("the {kind} name '{name}' is invalid: {rule}")]
    InvalidName {
        kind: &'static str,
        name: String,
        rule: &'static str,
    },
    #[error("{0}")]
    InvalidProperty(String),
    /// A request body over the operation's limit: 413 RequestBodyTooLarge.
    #[error("{0}")]
    BodyTooLarge(String),
    /// Bad input with the protocol's own error code (400), e.g. the Blob service's
    /// InvalidMetadata or MetadataTooLarge.
    #[error("{message}")]
    BadInput { code: &'static str, message: String },
    #[error(
        "the location '{location}' is not available for resource type '{resource_type}'; available: {available}"
    )]
    LocationNotAvailable {
        location: String,
        resource_type: String,
        available: String,
    },
    #[error("subscription '{0}' could not be found")]
    SubscriptionNotFound(String),
    #[error("resource group '{0}' could not be found")]
    ResourceGroupNotFound(String),
    #[error("the resource '{resource_type}/{name}' was not found")]
    ResourceNotFound { resource_type: String, name: String },
    #[error("the role definition '{0}' does not exist")]
    RoleDefinitionNotFound(String),
    #[error("principal '{0}' does not exist in the directory")]
    PrincipalNotFound(String),
    #[error("the role assignment already exists")]
    RoleAssignmentExists,
    #[error("{0}")]
    Conflict(String),
    #[error("The storage account named {0} is already taken.")]
    StorageAccountNameTaken(String),
    #[error("the vault name '{0}' is already in use")]
    VaultNameInUse(String),
    #[error(
        "the client '{principal}' does not have authorization to perform action '{action}' over scope '{scope}' or the scope is invalid"
    )]
    Forbidden {
        principal: String,
        action: String,
        scope: String,
    },
    #[error("the vault '{0}' was not found")]
    VaultNotFound(String),
    #[error("{0}")]
    KeyNotFound(String),
    /// The key's state forbids the operation (disabled, expired, not yet valid, key_ops,
    /// purge protection): 403 on the wire.
    #[error("{0}")]
    OperationNotAllowed(String),
    #[error("The specified container does not exist.")]
    ContainerNotFound,
    #[error("The specified container already exists.")]
    ContainerAlreadyExists,
    #[error("The specified blob does not exist.")]
    BlobNotFound,
    #[error(
        "The MD5 value specified in the request did not match the MD5 value calculated by the server."
    )]
    Md5Mismatch,
    #[error(
        "The CRC64 value specified in the request did not match the CRC64 value calculated by the server."
    )]
    Crc64Mismatch,
    #[error("The XML document is not valid: {0}")]
    InvalidXml(String),
    #[error("The specified block list is invalid: {0}")]
    InvalidBlockList(String),
    #[error("The range specified is invalid for the current size of the resource.")]
    InvalidRange,
    /// A customer-managed key configuration that cannot be used (ARM: 400 with `code`).
    #[error("{message}")]
    CmkInvalid { code: &'static str, message: String },
    /// A property that is chosen at creation and cannot change afterwards (ARM: 400
    /// `AccountPropertyCannotBeUpdated`, Azure's code and message).
    #[error(
        "The property '{0}' was specified in the input, but it cannot be updated as it is read-only."
    )]
    PropertyCannotChange(&'static str),
    /// The encryption scope of a blob is disabled: 403 on the blob plane.
    #[error("The encryption scope '{0}' is disabled.")]
    ScopeDisabled(String),
    /// A customer-provided key (CPK) is missing, wrong, or not expected: 409 with `code`.
    #[error("{message}")]
    Cpk { code: &'static str, message: String },
    /// The account's customer-managed key cannot be used now: data requests fail with 403
    /// and Azure's `code` (KeyVaultEncryptionKeyNotFound, ...).
    #[error("{message}")]
    CmkUnavailable { code: &'static str, message: String },
    /// A write's conditions (If-Match and the like, or the version it was built from) no
    /// longer hold when it commits: 412 ConditionNotMet.
    #[error("The condition specified using HTTP conditional header(s) is not met.")]
    ConditionNotMet,
    /// A copy's source conditions (`x-ms-source-if-*`) do not hold for the source:
    /// 412 SourceConditionNotMet.
    #[error("The source condition specified using HTTP conditional header(s) is not met.")]
    SourceConditionNotMet,
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, DomainError>;

impl From<coffer_crypto::CryptoError> for DomainError {
    fn from(e: coffer_crypto::CryptoError) -> Self {
        DomainError::Internal(e.to_string())
    }
}
