//! The per-partition window of recent event ids that removes SDK resends.
//!
//! A resend of an event (same project and `event_id`) is a new Kafka record at a new offset.
//! The window remembers, for each recent id, the offset of its first record: a record whose id
//! is known at another offset is a resend and is skipped; the same offset means Kafka delivered
//! the same record again, which the per-row offsets handle. The window spans
//! [`DedupConfig::window_secs`] of ingest time, capped at [`DedupConfig::max_entries`] ids per
//! partition; it is rebuilt from the raw event store when a partition is assigned.

use serde::{Deserialize, Serialize};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DedupConfig {
    /// How long an event id is remembered, in seconds of ingest time (default one hour).
    pub window_secs: u64,
    /// Most ids remembered per partition; the oldest go first past it.
    pub max_entries: usize,
}

impl Default for DedupConfig {
    fn default() -> Self {
        Self {
            window_secs: 3600,
            max_entries: 10_000_000,
        }
    }
}

/// A compact identity for (project, event_id): 24 bytes instead of two strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventKey {
    project: u64,
    event: u128,
}

impl EventKey {
    pub fn new(project_id: &str, event_id: &str) -> Self {
        let mut hasher = DefaultHasher::new();
        project_id.hash(&mut hasher);
        let event = uuid::Uuid::parse_str(event_id)
            .map(|u| u.as_u128())
            .unwrap_or_else(|_| {
                // Ingest only publishes UUIDs; anything else still gets a stable key.
                let mut h = DefaultHasher::new();
                event_id.hash(&mut h);
                u128::from(h.finish())
            });
        Self {
            project: hasher.finish(),
            event,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time this id is seen.
    New,
    /// The very record seen before (redelivery); the per-row offsets decide.
    SameRecord,
    /// Another record with an id already seen: an SDK resend, to skip.
    Resend,
}

#[derive(Debug, Default)]
pub struct DedupWindow {
    first_offset: HashMap<EventKey, u64>,
    order: VecDeque<(i64, EventKey)>,
    newest_ms: i64,
}

impl DedupWindow {
    pub fn len(&self) -> usize {
        self.first_offset.len()
    }

    pub fn is_empty(&self) -> bool {
        self.first_offset.is_empty()
    }

    /// Looks the id up and remembers it if new.
    pub fn observe(
        &mut self,
        key: EventKey,
        offset: u64,
        received_at_ms: i64,
        config: &DedupConfig,
    ) -> Seen {
        match self.first_offset.get(&key) {
            Some(&first) if first == offset => Seen::SameRecord,
            Some(_) => Seen::Resend,
            None => {
                self.remember(key, offset, received_at_ms, config);
                Seen::New
            }
        }
    }

    /// Adds an id known from the event store (used when rebuilding the window).
    pub fn remember(
        &mut self,
        key: EventKey,
        offset: u64,
        received_at_ms: i64,
        config: &DedupConfig,
    ) {
        if self.first_offset.insert(key, offset).is_none() {
            self.order.push_back((received_at_ms, key));
        }
        self.newest_ms = self.newest_ms.max(received_at_ms);
        self.evict(config);
    }

    fn evict(&mut self, config: &DedupConfig) {
        let horizon = self.newest_ms - i64::try_from(config.window_secs * 1000).unwrap_or(i64::MAX);
        while let Some(&(at, key)) = self.order.front() {
            if at >= horizon && self.order.len() <= config.max_entries {
                break;
            }
            self.order.pop_front();
            self.first_offset.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0193a1b2-0000-7000-8000-000000000001";

    #[test]
    fn tells_resends_from_redeliveries() {
        let config = DedupConfig::default();
        let mut window = DedupWindow::default();
        let key = EventKey::new("p", ID);
        assert_eq!(window.observe(key, 10, 1_000, &config), Seen::New);
        assert_eq!(window.observe(key, 10, 1_000, &config), Seen::SameRecord);
        assert_eq!(window.observe(key, 42, 2_000, &config), Seen::Resend);
        assert_eq!(
            window.observe(EventKey::new("other", ID), 43, 2_000, &config),
            Seen::New
        );
    }

    #[test]
    fn forgets_past_the_window_and_the_cap() {
        let config = DedupConfig {
            window_secs: 10,
            max_entries: 3,
        };
        let mut window = DedupWindow::default();
        let old = EventKey::new("p", ID);
        window.observe(old, 1, 0, &config);
        window.observe(EventKey::new("p", "a"), 2, 11_000, &config);
        assert_eq!(
            window.observe(old, 5, 11_000, &config),
            Seen::New,
            "aged out"
        );
        for (i, id) in ["b", "c", "d"].iter().enumerate() {
            window.observe(EventKey::new("p", id), 10 + i as u64, 11_000, &config);
        }
        assert_eq!(window.len(), 3);
    }
}
