//! What both Tally services share at run time: configuration, logs, metrics, the ClickHouse
//! and Kafka settings, migrations and retrying with backoff. What the data is lives in
//! `tally-schema` and `tally-quota`; what a service does with it, in the service.

pub mod backoff;
pub mod clickhouse;
pub mod config;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod migrate;
