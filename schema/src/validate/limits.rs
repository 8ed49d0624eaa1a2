//! The bounds ingest enforces on every batch and event (README: "Limits").

use serde::{Deserialize, Serialize};

/// Limits on what one batch and one event may hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Most events in one batch; more is refused with 413.
    pub max_batch_events: usize,
    /// Largest serialized size of one event, in bytes; larger events are rejected one by one.
    pub max_event_bytes: usize,
    /// Longest id, name or other short string field, in characters.
    pub max_string_chars: usize,
    /// Most entries in `attributes`.
    pub max_attributes: usize,
    /// How far in the future a timestamp may be, in hours.
    pub max_future_hours: i64,
    /// How far in the past a timestamp may be, in days (the raw-event retention).
    pub max_age_days: i64,
    /// Deepest nesting of arrays and objects in `content` (`[[1]]` is 2 deep).
    pub max_content_depth: usize,
    /// Largest token count in any `usage` field of one event.
    pub max_tokens: u64,
    /// Largest `duration_ms` and `time_to_first_token_ms` (10^9 ms is about 11.5 days).
    pub max_duration_ms: u64,
}

/// Largest `cost_usd` of one event: one million US dollars, in nano-USD. With the token and
/// duration maxima it keeps one event's contribution to any sum far inside 64 bits; sums of
/// many events saturate instead of wrapping.
pub const MAX_EVENT_COST_NANOS: i64 = 1_000_000 * crate::money::NANOS_PER_USD;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch_events: 1000,
            max_event_bytes: 256 * 1024,
            max_string_chars: 128,
            max_attributes: 64,
            max_future_hours: 24,
            max_age_days: 90,
            max_content_depth: 32,
            max_tokens: 1_000_000_000_000,
            max_duration_ms: 1_000_000_000,
        }
    }
}
