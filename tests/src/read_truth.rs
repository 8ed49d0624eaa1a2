//! What the read API must answer about a set of events, computed from the events themselves:
//! the ground truth `tests/read_api.rs` compares every route's answer with. Counts, tokens and
//! cost are exact; percentiles are the nearest-rank value, which the API gives as the upper
//! bound of its histogram bucket.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use tally_schema::event::{Event, EventType, Status, Timestamp, Usage};
use tally_schema::money::nanos_to_json;
use tally_schema::pricing::PriceTable;
use tally_schema::rollups::{latency_bucket, LATENCY_BOUNDS_MS};

/// `[from, to)` in Unix seconds, as the API widened it.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub from: i64,
    pub to: i64,
}

impl Span {
    /// `[from_ms, to_ms)` widened to whole periods of `step` seconds starting `offset` seconds
    /// after the epoch.
    pub fn aligned(from_ms: i64, to_ms: i64, step: i64, offset: i64) -> Self {
        let floor = |s: i64| offset + (s - offset).div_euclid(step) * step;
        let to_s = (to_ms + 999).div_euclid(1000);
        let to = if floor(to_s) < to_s {
            floor(to_s) + step
        } else {
            to_s
        };
        Self {
            from: floor(from_ms.div_euclid(1000)),
            to,
        }
    }

    fn holds(self, ts_ms: i64) -> bool {
        (self.from * 1000..self.to * 1000).contains(&ts_ms)
    }

    fn json(self) -> (Value, Value) {
        (
            json!(Timestamp(self.from * 1000)),
            json!(Timestamp(self.to * 1000)),
        )
    }
}

/// The filters of the metrics routes; `None` filters nothing.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub account_id: Option<String>,
    pub model: Option<String>,
    pub operation: Option<String>,
}

impl Filter {
    fn keeps(&self, event: &Event) -> bool {
        let matches = |want: &Option<String>, have: Option<&String>| {
            want.as_ref().is_none_or(|w| have == Some(w))
        };
        matches(&self.account_id, Some(&event.account_id))
            && matches(&self.model, event.model.as_ref())
            && matches(&self.operation, event.operation.as_ref())
    }
}

/// Usage figures of a set of events.
#[derive(Debug, Clone, Default)]
struct Figures {
    events: u64,
    llm_calls: u64,
    llm_responses: u64,
    errors: u64,
    usage: Usage,
    adjusted_tokens: i64,
    cost: i64,
    provided: i64,
    unpriced: u64,
}

impl Figures {
    fn add(&mut self, event: &Event, prices: &PriceTable) {
        self.events += 1;
        match event.event_type {
            EventType::LlmRequest => self.llm_calls += 1,
            EventType::LlmResponse => self.llm_responses += 1,
            _ => {}
        }
        if event.is_failure() {
            self.errors += 1;
        }
        self.usage.input_tokens += event.usage.input_tokens;
        self.usage.output_tokens += event.usage.output_tokens;
        self.usage.cache_read_tokens += event.usage.cache_read_tokens;
        self.usage.cache_write_tokens += event.usage.cache_write_tokens;
        self.adjusted_tokens += event.adjusted_tokens();
        self.provided += event.provided_cost_nanos.unwrap_or(0);
        if event.event_type == EventType::UsageAdjustment {
            // An adjustment's cost is the amount the admin gave, not a price.
            self.cost += event.provided_cost_nanos.unwrap_or(0);
        } else if !event.usage.is_zero() {
            let model = event.model.as_deref().unwrap_or_default();
            match prices.cost_nanos(model, event.timestamp, &event.usage) {
                Some(nanos) => self.cost += nanos,
                None => self.unpriced += 1,
            }
        }
    }

    fn usage_json(&self) -> Value {
        json!(self.usage)
    }

    fn cost_json(&self) -> Value {
        json!({
            "cost_usd": nanos_to_json(self.cost),
            "provided_cost_usd": nanos_to_json(self.provided),
            "unpriced_events": self.unpriced,
            "llm_calls": self.llm_calls,
            "usage": self.usage_json(),
            "adjusted_tokens": self.adjusted_tokens,
        })
    }
}

/// The nearest-rank percentile of sorted values (rank ⌈q·n⌉), as the histograms count.
pub fn exact_percentile(sorted: &[u64], q: f64) -> u64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted[rank - 1]
}

pub const PERCENTILES: [(&str, f64); 5] = [
    ("p50_ms", 0.50),
    ("p75_ms", 0.75),
    ("p90_ms", 0.90),
    ("p95_ms", 0.95),
    ("p99_ms", 0.99),
];

/// Count, exact average and the percentiles the API must give for these latencies.
pub fn latency_json(values: &[u64]) -> Value {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mut out = json!({
        "count": sorted.len(),
        "avg_ms": (!sorted.is_empty())
            .then(|| sorted.iter().sum::<u64>() as f64 / sorted.len() as f64),
    });
    for (name, q) in PERCENTILES {
        out[name] = match sorted.is_empty() {
            true => Value::Null,
            false => json!(LATENCY_BOUNDS_MS[latency_bucket(exact_percentile(&sorted, q))]),
        };
    }
    out
}

/// One session as the sessions list describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTruth {
    pub session_id: String,
    pub account_id: String,
    pub started_ms: i64,
    pub event_count: u64,
    pub failed: bool,
    pub models: BTreeSet<String>,
}

pub struct Truth {
    events: Vec<Event>,
    prices: PriceTable,
}

impl Truth {
    pub fn new(events: Vec<Event>) -> Self {
        Self {
            events,
            prices: PriceTable::built_in(),
        }
    }

    fn selected<'a>(&'a self, span: Span, filter: &'a Filter) -> impl Iterator<Item = &'a Event> {
        self.events
            .iter()
            .filter(move |e| span.holds(e.timestamp.0) && filter.keeps(e))
    }

    /// Every session, with its start and what the list filters on.
    pub fn sessions(&self) -> Vec<SessionTruth> {
        let mut by_id: BTreeMap<&str, SessionTruth> = BTreeMap::new();
        for event in &self.events {
            let session = by_id
                .entry(&event.session_id)
                .or_insert_with(|| SessionTruth {
                    session_id: event.session_id.clone(),
                    account_id: event.account_id.clone(),
                    started_ms: i64::MAX,
                    event_count: 0,
                    failed: false,
                    models: BTreeSet::new(),
                });
            session.started_ms = session.started_ms.min(event.timestamp.0);
            session.event_count += 1;
            session.failed |= event.is_failure();
            session.models.extend(event.model.clone());
        }
        by_id.into_values().collect()
    }

    /// The sessions list: started in `[from_ms, to_ms)`, newest first, then by id descending.
    pub fn session_list(
        &self,
        from_ms: i64,
        to_ms: i64,
        keep: impl Fn(&SessionTruth) -> bool,
    ) -> Vec<SessionTruth> {
        let mut list: Vec<SessionTruth> = self
            .sessions()
            .into_iter()
            .filter(|s| (from_ms..to_ms).contains(&s.started_ms) && keep(s))
            .collect();
        list.sort_by(|a, b| (b.started_ms, &b.session_id).cmp(&(a.started_ms, &a.session_id)));
        list
    }

    /// `GET /v1/metrics/summary` over `span` (account and model filters only).
    pub fn summary(&self, span: Span, filter: &Filter) -> Value {
        let mut figures = Figures::default();
        let (mut durations, mut ttfts) = (Vec::new(), Vec::new());
        for event in self.selected(span, filter) {
            figures.add(event, &self.prices);
            if event.event_type == EventType::LlmResponse {
                durations.extend(event.duration_ms);
                ttfts.extend(event.time_to_first_token_ms);
            }
        }
        let sessions = self.session_list(span.from * 1000, span.to * 1000, |s| {
            filter
                .account_id
                .as_ref()
                .is_none_or(|a| &s.account_id == a)
                && filter.model.as_ref().is_none_or(|m| s.models.contains(m))
        });
        let failed = sessions.iter().filter(|s| s.failed).count() as u64;
        let average = |values: &[u64]| {
            (!values.is_empty()).then(|| values.iter().sum::<u64>() as f64 / values.len() as f64)
        };
        let (from, to) = span.json();
        json!({
            "from": from,
            "to": to,
            "sessions": sessions.len(),
            "sessions_with_errors": failed,
            "error_rate": (!sessions.is_empty()).then(|| failed as f64 / sessions.len() as f64),
            "events": figures.events,
            "llm_calls": figures.llm_calls,
            "llm_responses": figures.llm_responses,
            "errors": figures.errors,
            "usage": figures.usage_json(),
            "adjusted_tokens": figures.adjusted_tokens,
            "cost_usd": nanos_to_json(figures.cost),
            "provided_cost_usd": nanos_to_json(figures.provided),
            "unpriced_events": figures.unpriced,
            "avg_latency_ms": average(&durations),
            "avg_time_to_first_token_ms": average(&ttfts),
        })
    }

    fn group_of(event: &Event, group_by: Option<&str>) -> String {
        match group_by {
            Some("model") => event.model.clone().unwrap_or_default(),
            Some("operation") => event.operation.clone().unwrap_or_default(),
            Some("account") => event.account_id.clone(),
            _ => String::new(),
        }
    }

    /// The `points` of `GET /v1/metrics/usage`: buckets of `step` seconds from `offset`.
    pub fn usage_points(
        &self,
        span: Span,
        (step, offset): (i64, i64),
        group_by: Option<&str>,
        filter: &Filter,
    ) -> Value {
        let mut points: BTreeMap<(i64, String), Figures> = BTreeMap::new();
        for event in self.selected(span, filter) {
            let secs = event.timestamp.0.div_euclid(1000);
            let bucket = offset + (secs - offset).div_euclid(step) * step;
            points
                .entry((bucket, Self::group_of(event, group_by)))
                .or_default()
                .add(event, &self.prices);
        }
        points
            .into_iter()
            .map(|((bucket, group), f)| {
                json!({
                    "bucket": Timestamp(bucket * 1000),
                    "group": (!group.is_empty()).then_some(group),
                    "events": f.events,
                    "llm_calls": f.llm_calls,
                    "llm_responses": f.llm_responses,
                    "errors": f.errors,
                    "usage": f.usage_json(),
                    "adjusted_tokens": f.adjusted_tokens,
                    "cost_usd": nanos_to_json(f.cost),
                    "provided_cost_usd": nanos_to_json(f.provided),
                    "unpriced_events": f.unpriced,
                })
            })
            .collect()
    }

    /// LLM response durations and times to first token, per model.
    pub fn latencies(&self, span: Span, filter: &Filter) -> BTreeMap<String, (Vec<u64>, Vec<u64>)> {
        let mut by_model: BTreeMap<String, (Vec<u64>, Vec<u64>)> = BTreeMap::new();
        for event in self.selected(span, filter) {
            if event.event_type != EventType::LlmResponse {
                continue;
            }
            let entry = by_model
                .entry(event.model.clone().unwrap_or_default())
                .or_default();
            entry.0.extend(event.duration_ms);
            entry.1.extend(event.time_to_first_token_ms);
        }
        by_model.retain(|_, (d, t)| !d.is_empty() || !t.is_empty());
        by_model
    }

    /// `GET /v1/metrics/latency` without `from`, `to` and `accuracy`.
    pub fn latency(&self, span: Span, filter: &Filter) -> Value {
        let by_model = self.latencies(span, filter);
        let all_durations: Vec<u64> = by_model.values().flat_map(|(d, _)| d.clone()).collect();
        let all_ttfts: Vec<u64> = by_model.values().flat_map(|(_, t)| t.clone()).collect();
        json!({
            "overall": {
                "duration": latency_json(&all_durations),
                "time_to_first_token": latency_json(&all_ttfts),
            },
            "by_model": by_model.iter().map(|(model, (d, t))| json!({
                "model": model,
                "duration": latency_json(d),
                "time_to_first_token": latency_json(t),
            })).collect::<Vec<_>>(),
        })
    }

    /// `tools` of `GET /v1/metrics/tools`.
    pub fn tools(&self, span: Span) -> Value {
        #[derive(Default)]
        struct Tool {
            calls: u64,
            results: u64,
            errors: u64,
            durations: Vec<u64>,
        }
        let mut tools: BTreeMap<String, Tool> = BTreeMap::new();
        for event in self.selected(span, &Filter::default()) {
            let Some(tool) = &event.tool else { continue };
            let entry = tools.entry(tool.name.clone()).or_default();
            match event.event_type {
                EventType::ToolCall => entry.calls += 1,
                EventType::ToolResult => {
                    entry.results += 1;
                    entry.durations.extend(event.duration_ms);
                }
                _ => {}
            }
            if event.is_failure() || event.status == Some(Status::Error) {
                entry.errors += 1;
            }
        }
        tools
            .into_iter()
            .map(|(name, t)| {
                json!({
                    "tool": name,
                    "calls": t.calls,
                    "results": t.results,
                    "errors": t.errors,
                    "success_rate": (t.calls > 0)
                        .then(|| t.calls.saturating_sub(t.errors) as f64 / t.calls as f64),
                    "duration": latency_json(&t.durations),
                })
            })
            .collect()
    }

    /// `GET /v1/metrics/cost` with at most `limit` entries per breakdown.
    pub fn cost(&self, span: Span, filter: &Filter, limit: usize) -> Value {
        let mut total = Figures::default();
        let mut days: BTreeMap<i64, Figures> = BTreeMap::new();
        let mut groups: BTreeMap<&str, BTreeMap<String, Figures>> = BTreeMap::new();
        for event in self.selected(span, filter) {
            total.add(event, &self.prices);
            let day = event.timestamp.0.div_euclid(86_400_000) * 86_400;
            days.entry(day).or_default().add(event, &self.prices);
            for group in ["model", "operation", "account"] {
                groups
                    .entry(group)
                    .or_default()
                    .entry(Self::group_of(event, Some(group)))
                    .or_default()
                    .add(event, &self.prices);
            }
        }
        let (from, to) = span.json();
        let mut out = total.cost_json();
        out["from"] = from;
        out["to"] = to;
        let mut truncated = Vec::new();
        for (group, key) in [
            ("model", "by_model"),
            ("operation", "by_operation"),
            ("account", "by_account"),
        ] {
            let mut shares: Vec<(String, Figures)> = groups
                .remove(group)
                .unwrap_or_default()
                .into_iter()
                .collect();
            // Costliest first, then by name, as the API orders them.
            shares.sort_by(|a, b| b.1.cost.cmp(&a.1.cost).then_with(|| a.0.cmp(&b.0)));
            if shares.len() > limit {
                shares.truncate(limit);
                truncated.push(key);
            }
            out[key] = shares
                .into_iter()
                .map(|(name, f)| {
                    let mut share = f.cost_json();
                    share["name"] = json!((!name.is_empty()).then_some(name));
                    share
                })
                .collect();
        }
        out["by_day"] = days
            .into_iter()
            .map(|(day, f)| {
                let mut entry = f.cost_json();
                entry["day"] = json!(Timestamp(day * 1000));
                entry
            })
            .collect();
        out["truncated"] = json!(truncated);
        out
    }
}
