//! The server: configuration, the seal, TLS, listeners (HTTPS main, HTTPS blob, CONNECT
//! proxy), bootstrap, and wiring. This is the only crate that names concrete backends.
pub mod bootstrap;
pub mod config;
pub mod keyfile;
pub mod listen;
pub mod proxy;
pub mod remote_vault;
pub mod run;
pub mod tls;
pub mod webhooks;

pub use config::ServerConfig;
pub use run::run;
