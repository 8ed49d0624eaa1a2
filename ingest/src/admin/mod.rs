//! The admin role (admin keys only): read and set an account's plan and overrides, credit or
//! debit its usage. Settings go to the compacted topic `tally.quota.v1`, adjustments to the
//! events topic as `usage_adjustment` events; projects and keys are configuration.

mod accounts;

use crate::quota::QuotaState;
use crate::server::Gate;
use crate::write::sink::EventSink;
use actix_web::web;
use std::sync::Arc;

/// The admin role's state: the quota view it reads and publishes through, the events sink.
pub struct AdminState {
    pub gate: Arc<Gate>,
    pub sink: Arc<dyn EventSink>,
    pub quota: Arc<QuotaState>,
}

impl AdminState {
    pub fn new(gate: Arc<Gate>, sink: Arc<dyn EventSink>, quota: Arc<QuotaState>) -> Self {
        Self { gate, sink, quota }
    }

    /// Why the admin routes are not ready, if they are not.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.quota.is_loaded() {
            return Some("quota view loading");
        }
        (!self.sink.is_ready()).then_some("kafka unreachable")
    }
}

/// Registers the admin routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route(
        "/v1/admin/accounts/{account_id}",
        web::get().to(accounts::get_account),
    )
    .route(
        "/v1/admin/accounts/{account_id}",
        web::put().to(accounts::put_account),
    )
    .route(
        "/v1/admin/accounts/{account_id}/adjustments",
        web::post().to(accounts::adjust_usage),
    );
}
