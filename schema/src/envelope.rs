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

/// Header that marks a control record on the event topic; its value names the command.
pub const CONTROL_HEADER: &str = "tally-control";

/// The `rebuild` control command: every aggregator recomputes, from the raw event store, the
/// rollups of its partition for `[from_ms, to_ms)` (widened to whole UTC days), as of the
/// control record's offset. Sent to every partition by `tally-aggregator rebuild`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildRequest {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl RebuildRequest {
    pub const COMMAND: &'static str = "rebuild";

    /// The range widened to whole UTC days, in Unix seconds, so daily rows are rebuilt whole.
    pub fn day_range_secs(&self) -> (i64, i64) {
        let day = 86_400;
        let from = self.from_ms.div_euclid(1000).div_euclid(day) * day;
        let to = (self.to_ms.div_euclid(1000) + day - 1).div_euclid(day) * day;
        (from, to.max(from + day))
    }
}
