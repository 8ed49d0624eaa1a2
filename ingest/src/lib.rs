//! tally-ingest: the HTTP front door of Tally, as four route families a deployment chooses
//! with `roles` (see [`config::Role`]):
//!
//! - [`write`]: `POST /v1/batch` to Kafka, answered once Kafka acknowledged it;
//! - [`read`]: sessions, timelines, metrics and account usage, from ClickHouse and the quota view;
//! - [`quota`]: `POST /v1/quota/check`, from the quota view alone;
//! - [`admin`]: account plans, overrides and usage adjustments.
//!
//! What they share lives beside them: keys and scopes ([`auth`]), request bodies ([`body`]),
//! the error answer ([`error`]), rate limits ([`ratelimit`]), metrics ([`metrics`]), and the
//! server with its middleware and operational routes ([`server`]).

pub mod admin;
pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod metrics;
pub mod quota;
pub mod ratelimit;
pub mod read;
pub mod server;
#[cfg(test)]
mod testing;
pub mod write;

use std::sync::Arc;

/// A built ingest: its address, the handle that stops it, and its Kafka sink.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub handle: actix_web::dev::ServerHandle,
    pub sink: Arc<write::sink::KafkaSink>,
}

/// Builds the Kafka sink, the quota view (when a role served needs it) and the server for
/// `config`, bound to `config.listen`. The server runs when the returned future is awaited or
/// spawned.
pub fn build(config: config::IngestConfig) -> anyhow::Result<(Running, actix_web::dev::Server)> {
    config.validate().map_err(|err| anyhow::anyhow!("{err}"))?;
    let sink = Arc::new(write::sink::KafkaSink::new(
        &config.kafka,
        &config.producer,
    )?);
    let listener = std::net::TcpListener::bind(&config.listen)
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.listen))?;
    let addr = listener.local_addr()?;
    let quota = if config.follows_quota_view() {
        quota::QuotaState::connect(config.quota.clone(), &config.kafka)?
    } else {
        quota::QuotaState::detached(config.quota.clone())
    };
    let services = server::Services::new(config, sink.clone(), quota)?;
    let server = server::start(actix_web::web::Data::new(services), listener)?;
    let running = Running {
        addr,
        handle: server.handle(),
        sink,
    };
    Ok((running, server))
}
