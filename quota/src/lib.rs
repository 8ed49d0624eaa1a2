//! The quota view both services keep in memory, the thread that follows `tally.quota.v1`
//! into it, and the producer that publishes to it.
//!
//! The topic is compacted: one record per (project, account, partition) of counters and one
//! per (project, account) of settings, so reading it from the start rebuilds the whole view.

mod follower;
mod publisher;
mod view;

pub use follower::{Follower, FollowerState};
pub use publisher::Publisher;
pub use view::{AccountView, QuotaView};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
