//! The read API beyond a single session, scoped to the read key's project: the sessions
//! list and the metrics routes. Totals come from the rollups (daily rows for whole days,
//! hourly rows around them), sessions from the session rollup; nothing here reads the raw
//! event store. Every parameter is checked in [`params`].

mod breakdowns;
mod metrics;
pub mod params;
mod rollup;
mod sessions_list;
#[cfg(test)]
mod tests;

use actix_web::web;

/// Registers the read routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/sessions", web::get().to(sessions_list::list_sessions))
        .route("/v1/metrics/summary", web::get().to(metrics::summary))
        .route("/v1/metrics/usage", web::get().to(metrics::usage))
        .route("/v1/metrics/latency", web::get().to(breakdowns::latency))
        .route("/v1/metrics/tools", web::get().to(breakdowns::tools))
        .route("/v1/metrics/cost", web::get().to(breakdowns::cost));
}
