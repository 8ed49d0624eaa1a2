//! tally-ingest: the HTTP front door of Tally.
//!
//! `POST /v1/batch` validates events and publishes them to Kafka, answering only after Kafka
//! acknowledged them; the read routes serve sessions from ClickHouse. See [`server::routes`].

pub mod auth;
pub mod batch;
pub mod body;
pub mod config;
pub mod error;
pub mod metrics;
pub mod quota;
pub mod ratelimit;
pub mod read;
pub mod server;
pub mod sessions;
pub mod sink;

#[cfg(test)]
mod tests;

use std::sync::Arc;

/// A built ingest: its address, the handle that stops it, and its Kafka sink.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub handle: actix_web::dev::ServerHandle,
    pub sink: Arc<sink::KafkaSink>,
}

/// Builds the Kafka sink and the server for `config`, bound to `config.listen`.
/// The server runs when the returned future is awaited or spawned.
pub fn build(config: config::IngestConfig) -> anyhow::Result<(Running, actix_web::dev::Server)> {
    let sink = Arc::new(sink::KafkaSink::new(&config.kafka, &config.producer)?);
    let listener = std::net::TcpListener::bind(&config.listen)
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.listen))?;
    let addr = listener.local_addr()?;
    let quota = quota::QuotaState::connect(config.quota.clone(), &config.kafka)?;
    let state =
        actix_web::web::Data::new(server::AppState::with_quota(config, sink.clone(), quota)?);
    let server = server::start(state, listener)?;
    let running = Running {
        addr,
        handle: server.handle(),
        sink,
    };
    Ok((running, server))
}
