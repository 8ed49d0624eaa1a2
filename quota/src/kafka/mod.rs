//! The quota topic's Kafka I/O: [`Follower`] reads `tally.quota.v1` from the start into a view
//! and keeps following it; [`Publisher`] writes counters, settings and adjustments to it.

mod follower;
mod publisher;

pub use follower::{Follower, FollowerState};
pub use publisher::Publisher;
