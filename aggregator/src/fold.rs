//! The fold: Kafka records in, ClickHouse rows out, each record applied exactly once.
//!
//! Pure state, no I/O: the consumer loads missing session rows before folding and writes
//! what [`Folder::fold`] returns. A record is skipped when its session row already includes
//! its offset (a redelivery after a crash or rebalance) or when it is an SDK resend
//! (see [`crate::dedup`]).

use crate::dedup::{DedupConfig, DedupWindow, EventKey, Seen};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use tally_schema::envelope::Envelope;
use tally_schema::rows::{EventRow, SessionRow};

/// One decoded Kafka record.
#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: u64,
    pub envelope: Envelope,
}

type SessionKey = (String, String);

fn session_key(envelope: &Envelope) -> SessionKey {
    (
        envelope.project_id.clone(),
        envelope.event.session_id.clone(),
    )
}

/// What one fold produced, to be written before offsets are committed.
#[derive(Debug, Default)]
pub struct FoldOutput {
    pub events: Vec<EventRow>,
    pub sessions: Vec<SessionRow>,
    pub resends_skipped: u64,
    pub redeliveries_skipped: u64,
}

pub struct Folder {
    dedup: DedupConfig,
    sessions: HashMap<SessionKey, SessionRow>,
    windows: HashMap<i32, DedupWindow>,
    max_cached_sessions: usize,
}

impl Folder {
    pub fn new(dedup: DedupConfig, max_cached_sessions: usize) -> Self {
        Self {
            dedup,
            sessions: HashMap::new(),
            windows: HashMap::new(),
            max_cached_sessions,
        }
    }

    /// Sessions of `records` whose rows are not in memory, grouped by project.
    pub fn sessions_to_load(&self, records: &[Record]) -> BTreeMap<String, Vec<String>> {
        let mut missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for record in records {
            let key = session_key(&record.envelope);
            if !self.sessions.contains_key(&key) {
                missing.entry(key.0).or_default().insert(key.1);
            }
        }
        missing
            .into_iter()
            .map(|(p, s)| (p, s.into_iter().collect()))
            .collect()
    }

    /// Takes in the rows loaded for `requested`; sessions without a row start empty.
    pub fn add_loaded(&mut self, project_id: &str, requested: &[String], rows: Vec<SessionRow>) {
        for row in rows {
            self.sessions
                .insert((row.project_id.clone(), row.session_id.clone()), row);
        }
        for session_id in requested {
            self.sessions
                .entry((project_id.to_owned(), session_id.clone()))
                .or_insert_with(|| SessionRow::empty(project_id, session_id, -1));
        }
    }

    /// Adds ids known from the event store to a partition's window.
    pub fn remember(
        &mut self,
        partition: i32,
        project_id: &str,
        event_id: &str,
        offset: u64,
        received_at_ms: i64,
    ) {
        self.windows.entry(partition).or_default().remember(
            EventKey::new(project_id, event_id),
            offset,
            received_at_ms,
            &self.dedup,
        );
    }

    /// Forgets everything about a partition (it was revoked, or is about to be reloaded).
    pub fn forget_partition(&mut self, partition: i32) {
        self.windows.remove(&partition);
        self.sessions
            .retain(|_, row| row.kafka_partition != partition);
    }

    /// Forgets all cached state.
    pub fn forget_all(&mut self) {
        self.windows.clear();
        self.sessions.clear();
    }

    /// Folds records (in Kafka order per partition). Every session they touch must be loaded.
    pub fn fold(&mut self, records: &[Record]) -> FoldOutput {
        let mut out = FoldOutput::default();
        let mut touched: BTreeSet<SessionKey> = BTreeSet::new();
        for record in records {
            let envelope = &record.envelope;
            let key = session_key(envelope);
            let Some(session) = self.sessions.get_mut(&key) else {
                debug_assert!(false, "session {key:?} was not loaded before folding");
                continue;
            };
            if session.has_applied(record.partition, record.offset) {
                out.redeliveries_skipped += 1;
                continue;
            }
            let window = self.windows.entry(record.partition).or_default();
            let event_key = EventKey::new(&envelope.project_id, &envelope.event.event_id);
            if window.observe(
                event_key,
                record.offset,
                envelope.received_at_ms,
                &self.dedup,
            ) == Seen::Resend
            {
                out.resends_skipped += 1;
                continue;
            }
            session.fold(&envelope.event, record.partition, record.offset);
            out.events.push(EventRow::from_envelope(
                envelope,
                record.partition,
                record.offset,
            ));
            touched.insert(key);
        }
        out.sessions = touched
            .iter()
            .filter_map(|key| self.sessions.get(key).cloned())
            .collect();
        if self.sessions.len() > self.max_cached_sessions {
            // Everything cached is in ClickHouse once this output is written; keep only what
            // this batch touched and reload the rest on demand.
            self.sessions.retain(|key, _| touched.contains(key));
        }
        out
    }
}

#[cfg(test)]
mod tests;
