//! Coffer's domain: identity, RBAC, management resources, audit.
//!
//! Invariants (absences): this crate performs no HTTP and no SQL. It owns the storage traits
//! ([`store::MetaStore`]) and the audit sink ([`audit::AuditSink`]); backends implement them.
//! Every decision to allow or deny goes through [`rbac::Rbac::authorize`].

pub mod audit;
pub mod blob;
pub mod bytes;
pub mod cache;
pub mod clock;
pub mod cmk;
pub mod error;
pub mod events;
pub mod identity;
pub mod keyvault;
pub mod mgmt;
pub mod model;
pub mod names;
pub mod rbac;
pub mod seal;
pub mod store;

pub use error::{DomainError, Result};
