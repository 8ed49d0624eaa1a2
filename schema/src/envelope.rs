//! The Kafka record for one event on `tally.events.v1`.
//!
//! Key: `project_id:session_id`, so every event of a session lands in one partition and is
//! folded in order by one aggregator. Payload: this envelope as JSON.

use crate::event::Event;
use serde::{Deserialize, Serialize};

/// Version of the payload layout; bumped on an incompatible change.
pub const ENVELOPE_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub project_id: String,
    /// When ingest accepted the event, in Unix milliseconds.
    pub received_at_ms: i64,
    pub event: Event,
}

impl Envelope {
    pub fn new(project_id: &str, received_at_ms: i64, event: Event) -> Self {
        Self {
            v: ENVELOPE_VERSION,
            project_id: project_id.to_owned(),
            received_at_ms,
            event,
        }
    }

    /// The partitioning key: `project:session`.
    pub fn key(&self) -> String {
        format!("{}:{}", self.project_id, self.event.session_id)
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into memory cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }
}
