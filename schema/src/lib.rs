//! Tally's data model, with no I/O.
//!
//! - [`event`]: the validated event, as it travels from ingest through Kafka to ClickHouse;
//! - [`validate`]: turning untrusted JSON into events, or into per-event [`validate::Rejection`]s;
//! - [`envelope`]: the Kafka record (key and payload) that carries one event;
//! - [`rows`]: ClickHouse row types and the session rollup fold;
//! - [`money`]: exact USD amounts as integer nano-dollars;
//! - [`pricing`] and [`rollups`]: the price table and the hourly/daily usage and tool rows;
//! - [`migrations`] and [`queries`]: the SQL that both services and the tests run.
//!
//! Quotas (plans, limits, counters, the check) are `tally-quota`'s; reading and writing
//! ClickHouse and Kafka are the services'.

pub mod envelope;
pub mod event;
pub mod migrations;
pub mod money;
pub mod pricing;
pub mod queries;
pub mod rollups;
pub mod rows;
pub mod validate;

pub use envelope::Envelope;
pub use event::{Event, EventType};
