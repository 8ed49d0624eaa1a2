//! ClickHouse rows: the raw event store and the session rollup, and the fold between them.
//!
//! Every row the aggregator writes carries the Kafka partition and the offset of the last
//! record folded into it; that is how a restarted aggregator knows what it already applied.

use crate::envelope::Envelope;
use crate::event::{ErrorInfo, Event, EventType, Status, Timestamp, Tool, Usage};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One row of `events`: the raw event store (collapses duplicates by `event_id`).
#[derive(Debug, Clone, PartialEq, Row, Serialize, Deserialize)]
pub struct EventRow {
    pub project_id: String,
    pub session_id: String,
    pub event_id: String,
    pub event_type: String,
    /// Seconds since the epoch (ClickHouse `DateTime`), for partitioning and dashboards.
    pub ts: u32,
    pub ts_ms: i64,
    pub account_id: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub operation: String,
    pub model: String,
    pub provider: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub provided_cost_nanos: Option<i64>,
    pub duration_ms: Option<u64>,
    pub time_to_first_token_ms: Option<u64>,
    pub status: String,
    pub tool_name: String,
    pub tool_call_id: String,
    pub error_type: String,
    pub error_message: String,
    pub error_stack: String,
    /// `content` as JSON text; empty when absent.
    pub content: String,
    /// `attributes` as a JSON object; empty when absent.
    pub attributes: String,
    pub received_at_ms: i64,
    pub kafka_partition: i32,
    pub kafka_offset: u64,
}

fn non_empty(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

impl EventRow {
    pub fn from_envelope(envelope: &Envelope, kafka_partition: i32, kafka_offset: u64) -> Self {
        Self::new(envelope.clone(), kafka_partition, kafka_offset)
    }

    /// The row of an envelope, taking its strings rather than copying them.
    pub fn new(envelope: Envelope, kafka_partition: i32, kafka_offset: u64) -> Self {
        let e = envelope.event;
        let error = e.error.unwrap_or_default();
        let (tool_name, tool_call_id) = match e.tool {
            Some(tool) => (tool.name, tool.call_id.unwrap_or_default()),
            None => (String::new(), String::new()),
        };
        Self {
            project_id: envelope.project_id,
            session_id: e.session_id,
            event_id: e.event_id,
            event_type: e.event_type.as_str().to_owned(),
            ts: u32::try_from(e.timestamp.0.div_euclid(1000)).unwrap_or(0),
            ts_ms: e.timestamp.0,
            account_id: e.account_id,
            trace_id: e.trace_id.unwrap_or_default(),
            span_id: e.span_id.unwrap_or_default(),
            parent_span_id: e.parent_span_id.unwrap_or_default(),
            operation: e.operation.unwrap_or_default(),
            model: e.model.unwrap_or_default(),
            provider: e.provider.unwrap_or_default(),
            input_tokens: e.usage.input_tokens,
            output_tokens: e.usage.output_tokens,
            cache_read_tokens: e.usage.cache_read_tokens,
            cache_write_tokens: e.usage.cache_write_tokens,
            provided_cost_nanos: e.provided_cost_nanos,
            duration_ms: e.duration_ms,
            time_to_first_token_ms: e.time_to_first_token_ms,
            status: e.status.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            tool_name,
            tool_call_id,
            error_type: error.kind.unwrap_or_default(),
            error_message: error.message.unwrap_or_default(),
            error_stack: error.stack.unwrap_or_default(),
            content: e.content.map(|c| c.get().to_owned()).unwrap_or_default(),
            attributes: if e.attributes.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&e.attributes).unwrap_or_default()
            },
            received_at_ms: envelope.received_at_ms,
            kafka_partition,
            kafka_offset,
        }
    }

    /// Back to the wire form, as the session timeline returns it.
    pub fn into_event(self) -> Event {
        let error = ErrorInfo {
            kind: non_empty(self.error_type),
            message: non_empty(self.error_message),
            stack: non_empty(self.error_stack),
        };
        Event {
            event_id: self.event_id,
            event_type: EventType::parse_stored(&self.event_type).unwrap_or(EventType::Custom),
            timestamp: Timestamp(self.ts_ms),
            session_id: self.session_id,
            account_id: self.account_id,
            trace_id: non_empty(self.trace_id),
            span_id: non_empty(self.span_id),
            parent_span_id: non_empty(self.parent_span_id),
            operation: non_empty(self.operation),
            model: non_empty(self.model),
            provider: non_empty(self.provider),
            usage: Usage {
                input_tokens: self.input_tokens,
                output_tokens: self.output_tokens,
                cache_read_tokens: self.cache_read_tokens,
                cache_write_tokens: self.cache_write_tokens,
            },
            provided_cost_nanos: self.provided_cost_nanos,
            duration_ms: self.duration_ms,
            time_to_first_token_ms: self.time_to_first_token_ms,
            status: match self.status.as_str() {
                "ok" => Some(Status::Ok),
                "error" => Some(Status::Error),
                _ => None,
            },
            tool: non_empty(self.tool_name).map(|name| Tool {
                name,
                call_id: non_empty(self.tool_call_id),
            }),
            error: (error != ErrorInfo::default()).then_some(error),
            content: crate::event::JsonText::parse(&self.content),
            attributes: serde_json::from_str(&self.attributes).unwrap_or_default(),
        }
    }
}

/// The computed cost of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priced {
    /// The event carries no token usage.
    NoUsage,
    /// Cost in nano-USD by the price in force at the event's time.
    Cost(i64),
    /// The event has usage but its model had no price then; it counts as zero and is flagged.
    Unpriced,
}

/// Most distinct models a session's rollup lists: a client naming a new model in every event
/// cannot grow the row (rewritten on each fold) or the session's answer without bound.
pub const MAX_SESSION_MODELS: usize = 64;

/// One row of `sessions`: the rollup of one session, replaced by each newer fold.
///
/// `ReplacingMergeTree(kafka_offset)` keeps the row with the highest offset, which is the
/// state after the most events; reads use `FINAL`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct SessionRow {
    pub project_id: String,
    pub session_id: String,
    pub account_id: String,
    pub first_ts_ms: i64,
    pub last_ts_ms: i64,
    pub event_count: u64,
    /// Event types seen, sorted, beside `event_type_counts` (ClickHouse 18.16 has no Map).
    pub event_types: Vec<String>,
    pub event_type_counts: Vec<u64>,
    pub llm_calls: u64,
    pub tool_calls: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Cost by Tally's price table, in nano-USD.
    pub cost_nanos: i64,
    /// Cost the SDK reported, in nano-USD.
    pub provided_cost_nanos: i64,
    /// Events with usage whose model had no price at their time (priced at zero).
    pub unpriced_events: u64,
    /// Distinct models seen, sorted; at most [`MAX_SESSION_MODELS`].
    pub models: Vec<String>,
    /// 1 once a model arrived that the full `models` list could not take.
    pub models_truncated: u8,
    pub ended: u8,
    pub kafka_partition: i32,
    pub kafka_offset: u64,
}

impl SessionRow {
    /// A session that has seen no events yet.
    pub fn empty(project_id: &str, session_id: &str, kafka_partition: i32) -> Self {
        Self {
            project_id: project_id.to_owned(),
            session_id: session_id.to_owned(),
            account_id: String::new(),
            first_ts_ms: i64::MAX,
            last_ts_ms: i64::MIN,
            event_count: 0,
            event_types: Vec::new(),
            event_type_counts: Vec::new(),
            llm_calls: 0,
            tool_calls: 0,
            errors: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            cost_nanos: 0,
            provided_cost_nanos: 0,
            unpriced_events: 0,
            models: Vec::new(),
            models_truncated: 0,
            ended: 0,
            kafka_partition,
            kafka_offset: 0,
        }
    }

    /// True when the record at (`partition`, `offset`) is already part of this row.
    pub fn has_applied(&self, partition: i32, offset: u64) -> bool {
        self.event_count > 0 && self.kafka_partition == partition && offset <= self.kafka_offset
    }

    /// Folds one event (the Kafka record at `partition`/`offset`) into the rollup, with its
    /// computed cost (`Priced::Unpriced` when its model has no price).
    pub fn fold(&mut self, event: &Event, cost: Priced, partition: i32, offset: u64) {
        if self.account_id.is_empty() {
            self.account_id = event.account_id.clone();
        }
        self.first_ts_ms = self.first_ts_ms.min(event.timestamp.0);
        self.last_ts_ms = self.last_ts_ms.max(event.timestamp.0);
        self.event_count += 1;
        let type_name = event.event_type.as_str();
        match self
            .event_types
            .binary_search_by(|t| t.as_str().cmp(type_name))
        {
            Ok(i) => self.event_type_counts[i] += 1,
            Err(i) => {
                self.event_types.insert(i, type_name.to_owned());
                self.event_type_counts.insert(i, 1);
            }
        }
        match event.event_type {
            EventType::LlmRequest => self.llm_calls += 1,
            EventType::ToolCall => self.tool_calls += 1,
            EventType::SessionEnd => self.ended = 1,
            _ => {}
        }
        if event.is_failure() {
            self.errors += 1;
        }
        self.input_tokens = self.input_tokens.saturating_add(event.usage.input_tokens);
        self.output_tokens = self.output_tokens.saturating_add(event.usage.output_tokens);
        self.cache_read_tokens = self
            .cache_read_tokens
            .saturating_add(event.usage.cache_read_tokens);
        self.cache_write_tokens = self
            .cache_write_tokens
            .saturating_add(event.usage.cache_write_tokens);
        self.provided_cost_nanos = self
            .provided_cost_nanos
            .saturating_add(event.provided_cost_nanos.unwrap_or(0));
        match cost {
            Priced::Cost(nanos) => self.cost_nanos = self.cost_nanos.saturating_add(nanos),
            Priced::Unpriced => self.unpriced_events += 1,
            Priced::NoUsage => {}
        }
        if let Some(model) = &event.model {
            if let Err(i) = self.models.binary_search(model) {
                if self.models.len() < MAX_SESSION_MODELS {
                    self.models.insert(i, model.clone());
                } else {
                    self.models_truncated = 1;
                }
            }
        }
        self.kafka_partition = partition;
        self.kafka_offset = offset;
    }

    /// Event counts by type, as the API returns them.
    pub fn counts_by_type(&self) -> BTreeMap<String, u64> {
        self.event_types
            .iter()
            .cloned()
            .zip(self.event_type_counts.iter().copied())
            .collect()
    }
}
