//! The write role: `POST /v1/batch` reads, validates and redacts a batch and publishes it to
//! Kafka through the [`sink::EventSink`], answering only once Kafka acknowledged every
//! accepted event. It reads neither ClickHouse nor the quota view.

pub mod batch;
pub mod sink;
#[cfg(test)]
mod tests;

use crate::server::Gate;
use actix_web::web;
use sink::EventSink;
use std::sync::Arc;

/// The write role's state.
pub struct WriteState {
    pub gate: Arc<Gate>,
    pub sink: Arc<dyn EventSink>,
}

impl WriteState {
    pub fn new(gate: Arc<Gate>, sink: Arc<dyn EventSink>) -> Self {
        Self { gate, sink }
    }

    /// Why the write path is not ready, if it is not.
    pub fn not_ready(&self) -> Option<&'static str> {
        (!self.sink.is_ready()).then_some("kafka unreachable")
    }
}

/// Registers the write routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/batch", web::post().to(batch::post_batch));
}
