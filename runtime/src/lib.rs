//! What both Tally services share at run time.

pub mod clickhouse;
pub mod config;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod migrate;
