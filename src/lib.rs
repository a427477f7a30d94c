//! scimgate: a TLS-terminating reverse proxy that serves SCIM for a ThingWorx-style platform
//! and passes every other request through.

mod activity;
pub mod admin;
pub mod auth;
#[cfg(feature = "bench-api")]
#[doc(hidden)] // Only for benches/micro.rs (`--features bench-api`): not an API.
pub mod bench_api;
pub mod body;
pub mod builtin;
pub mod cli;
pub mod config;
pub mod dev;
pub mod framing;
pub mod fsutil;
pub mod gateway;
pub mod live_check;
pub mod logging;
pub mod malloc_arenas;
pub mod metrics;
pub mod pem;
pub mod platform;
pub mod provisioning;
pub mod proxy;
mod random;
mod rfc3339;
pub mod router;
pub mod scim;
pub mod server;
pub mod tag;

/// One crypto provider for the whole process; `ring` is never linked.
pub fn install_crypto_provider() {
    // Already installed (by an embedding program or a test) is fine: it is the same provider.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
