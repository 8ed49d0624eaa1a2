//! Quotas, whole: the data (plans, limits, account settings, the counters of each window), the
//! decision a check makes from them, the counters the aggregator keeps per partition, and the
//! in-memory view both services hold of the compacted topic `tally.quota.v1`.
//!
//! - [`model`]: plans and limits as configured, the topic's records, the window arithmetic,
//!   the account caps and [`evaluate`], the pure check (re-exported at the root);
//! - [`view`]: every account's settings and counters as the topic last said;
//! - [`ledger`]: the aggregator's counters of the partitions it owns;
//! - [`kafka`] (feature `kafka`, on by default): the thread that follows the topic into a view
//!   and the producer that publishes to it.
//!
//! The HTTP routes (`/v1/quota/check`, `/v1/usage`, the admin routes) live in ingest and the
//! folding of events into counters in the aggregator; both call into this crate for every rule.
//! The topic is compacted: one record per (project, account, partition) of counters and one per
//! (project, account) of settings, so reading it from the start rebuilds the whole view.

#[cfg(feature = "kafka")]
pub mod kafka;
pub mod ledger;
pub mod model;
pub mod view;

#[cfg(feature = "kafka")]
pub use kafka::{Follower, FollowerState, Publisher};
pub use ledger::{QuotaDelta, QuotaLedger};
pub use model::*;
pub use view::{AccountView, QuotaView};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
