//! A replayable workload for the aggregator's exactly-once tests: realistic sessions turned
//! into Kafka records the way ingest would publish them, with SDK resends (the same event
//! again, later in the stream), events out of order within their session, and late events
//! (hours to days old); and the ground truth, computed here from the unique events.

use crate::workload::Workload;
use chrono::{Duration as ChronoDuration, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};
use tally_schema::envelope::Envelope;
use tally_schema::event::{Event, EventType};
use tally_schema::pricing::PriceTable;

/// Totals per (account, model), as the usage rollups must hold them.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Totals {
    pub events: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub cost_nanos: i64,
    pub provided_cost_nanos: i64,
}

/// What every table must add up to once the whole workload is folded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroundTruth {
    pub by_account_model: BTreeMap<(String, String), Totals>,
    pub unique_events: u64,
    pub sessions: u64,
    pub tool_calls: u64,
    pub tool_results: u64,
}

pub struct Replay {
    pub records: Vec<Envelope>,
    pub truth: GroundTruth,
}

impl Replay {
    /// `sessions` sessions over `accounts` accounts for `project_id`, from `seed`.
    pub fn generate(seed: u64, project_id: &str, sessions: usize, accounts: usize) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut workload = Workload::new(seed, Utc::now() - ChronoDuration::hours(3));
        let now_ms = Utc::now().timestamp_millis();
        let mut streams: Vec<Vec<Event>> = Vec::new();
        for index in 0..sessions {
            let account = format!("acct-{}", index % accounts.max(1));
            let mut events: Vec<Event> = workload
                .session(index, &account)
                .into_iter()
                .map(|value| {
                    serde_json::from_value(value).expect("the workload builds valid events")
                })
                .collect();
            if rng.random_bool(0.1) {
                // A late session: it happened one to three days ago.
                let shift = rng.random_range(24 * 3_600_000..72 * 3_600_000i64);
                for event in &mut events {
                    event.timestamp.0 -= shift;
                }
            }
            if rng.random_bool(0.3) {
                // Out of order within the session.
                events.shuffle(&mut rng);
            }
            streams.push(events);
        }

        let truth = ground_truth(project_id, &streams);

        // Interleave the sessions as live traffic does: at most CONCURRENT sessions are open
        // at once, each keeps its own order, and some events are resent a little later.
        const CONCURRENT: usize = 500;
        let mut records = Vec::new();
        let mut cursors = vec![0usize; streams.len()];
        let mut waiting = (0..streams.len()).rev().collect::<Vec<_>>();
        let mut live: Vec<usize> = Vec::new();
        let mut resends: Vec<(usize, Event)> = Vec::new();
        loop {
            while live.len() < CONCURRENT {
                match waiting.pop() {
                    Some(next) => live.push(next),
                    None => break,
                }
            }
            if live.is_empty() {
                break;
            }
            let pick = rng.random_range(0..live.len());
            let session = live[pick];
            let event = streams[session][cursors[session]].clone();
            cursors[session] += 1;
            if cursors[session] == streams[session].len() {
                live.swap_remove(pick);
            }
            if rng.random_bool(0.05) {
                resends.push((records.len() + rng.random_range(1..500), event.clone()));
            }
            records.push(Envelope::new(project_id, now_ms, event));
            while let Some(position) = resends.iter().position(|(at, _)| *at <= records.len()) {
                let (_, event) = resends.swap_remove(position);
                records.push(Envelope::new(project_id, now_ms, event));
            }
        }
        for (_, event) in resends {
            records.push(Envelope::new(project_id, now_ms, event));
        }
        Self { records, truth }
    }
}

fn ground_truth(project_id: &str, streams: &[Vec<Event>]) -> GroundTruth {
    let prices = PriceTable::built_in();
    let mut truth = GroundTruth::default();
    let mut seen = HashSet::new();
    let mut sessions = HashSet::new();
    for event in streams.iter().flatten() {
        if !seen.insert((project_id.to_owned(), event.event_id.clone())) {
            continue;
        }
        truth.unique_events += 1;
        sessions.insert(event.session_id.clone());
        let key = (
            event.account_id.clone(),
            event.model.clone().unwrap_or_default(),
        );
        let totals = truth.by_account_model.entry(key).or_default();
        totals.events += 1;
        totals.input_tokens += event.usage.input_tokens;
        totals.output_tokens += event.usage.output_tokens;
        totals.cache_read_tokens += event.usage.cache_read_tokens;
        totals.cache_write_tokens += event.usage.cache_write_tokens;
        totals.provided_cost_nanos += event.provided_cost_nanos.unwrap_or(0);
        if !event.usage.is_zero() {
            let model = event.model.as_deref().unwrap_or_default();
            totals.cost_nanos += prices
                .cost_nanos(model, event.timestamp, &event.usage)
                .unwrap_or(0);
        }
        match event.event_type {
            EventType::ToolCall => truth.tool_calls += 1,
            EventType::ToolResult => truth.tool_results += 1,
            _ => {}
        }
    }
    truth.sessions = sessions.len() as u64;
    truth
}
