//! The read role, scoped to the read key's project: one session and its timeline, the
//! sessions list, the metrics routes and an account's usage. Totals come from the rollups
//! (daily rows for whole days, hourly rows around them), sessions from the session rollup,
//! the current windows of an account's usage from the quota view; only the timeline reads the
//! raw event store. Every parameter is checked in [`params`].

mod breakdowns;
mod metrics;
pub mod params;
pub mod rollup;
pub mod sessions;
mod sessions_list;
#[cfg(test)]
mod tests;
mod usage;

use crate::quota::QuotaState;
use crate::server::Gate;
use actix_web::web;
use std::sync::Arc;

/// Longest a read query may run in ClickHouse (`max_execution_time`), in seconds; past it
/// the read answers 503.
pub const READ_MAX_EXECUTION_SECS: u32 = 30;

/// The read role's state: a ClickHouse client bounded in time, and the quota view.
pub struct ReadState {
    pub gate: Arc<Gate>,
    pub clickhouse: clickhouse::Client,
    pub quota: Arc<QuotaState>,
}

impl ReadState {
    pub fn new(gate: Arc<Gate>, quota: Arc<QuotaState>) -> Self {
        // No read may hold a ClickHouse thread longer than this, whatever it asks.
        let clickhouse = gate
            .config
            .clickhouse
            .client()
            .with_setting("max_execution_time", READ_MAX_EXECUTION_SECS.to_string());
        Self {
            gate,
            clickhouse,
            quota,
        }
    }

    /// Why the read routes are not ready, if they are not (usage answers from the view).
    pub fn not_ready(&self) -> Option<&'static str> {
        (!self.quota.is_loaded()).then_some("quota view loading")
    }
}

/// Registers the read routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/sessions", web::get().to(sessions_list::list_sessions))
        .route("/v1/sessions/{id}", web::get().to(sessions::get_session))
        .route(
            "/v1/sessions/{id}/timeline",
            web::get().to(sessions::get_timeline),
        )
        .route("/v1/metrics/summary", web::get().to(metrics::summary))
        .route("/v1/metrics/usage", web::get().to(metrics::usage))
        .route("/v1/metrics/latency", web::get().to(breakdowns::latency))
        .route("/v1/metrics/tools", web::get().to(breakdowns::tools))
        .route("/v1/metrics/cost", web::get().to(breakdowns::cost))
        .route("/v1/usage/{account_id}", web::get().to(usage::get_usage));
}
