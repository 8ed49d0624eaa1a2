//! The time-bucketed rollups: usage per hour and per day (project × account × model ×
//! operation) and tool usage per hour.
//!
//! Each Kafka partition owns its own row of a bucket (`kafka_partition` is part of the key),
//! holding everything that partition folded into the bucket and the offset of the last
//! record it folded. A record is applied to a row only when its offset is past the row's, so
//! replays change nothing; readers sum the partitions' rows.

use crate::event::{Event, EventType, Status};
use crate::rows::Priced;
use clickhouse::Row;
use serde::{Deserialize, Serialize};

/// Upper bounds (inclusive, ms) of the latency histogram buckets: 16 per decade from 1 ms to
/// 1000 s, `round(10^(i/16))`. A value above the last bound goes to one overflow bucket, so
/// histograms have `LATENCY_BOUNDS_MS.len() + 1` counters. A percentile read from them is the
/// upper bound of the bucket holding it: never below the true value, at most 15.5 % above.
pub const LATENCY_BOUNDS_MS: [u64; 97] = latency_bounds();

const fn latency_bounds() -> [u64; 97] {
    // 10^(j/16) for j = 0..16, in millionths, rounded; the decades multiply it.
    const STEPS: [u64; 16] = [
        1_000_000, 1_154_782, 1_333_521, 1_539_927, 1_778_279, 2_053_525, 2_371_374, 2_738_420,
        3_162_278, 3_651_741, 4_216_965, 4_869_675, 5_623_413, 6_493_816, 7_498_942, 8_659_643,
    ];
    let mut out = [0u64; 97];
    let mut i = 0;
    while i < 97 {
        let mut scale = 1u64;
        let mut d = 0;
        while d < i / 16 {
            scale *= 10;
            d += 1;
        }
        // Round to the nearest millisecond.
        out[i] = (STEPS[i % 16] * scale + 500_000) / 1_000_000;
        i += 1;
    }
    out
}

/// The histogram bucket of a latency in ms.
pub fn latency_bucket(ms: u64) -> usize {
    LATENCY_BOUNDS_MS.partition_point(|&bound| bound < ms)
}

/// Adds one latency to a histogram, growing it to full length on first use.
fn observe(hist: &mut Vec<u64>, ms: u64) {
    hist.resize(LATENCY_BOUNDS_MS.len() + 1, 0);
    hist[latency_bucket(ms)] += 1;
}

/// The bucket value (upper bound, ms) at quantile `q` of a histogram; `None` when empty.
pub fn histogram_quantile(hist: &[u64], q: f64) -> Option<u64> {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, count) in hist.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    None
}

/// Hour or day, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Granularity {
    Hour,
    Day,
}

impl Granularity {
    pub const ALL: [Granularity; 2] = [Granularity::Hour, Granularity::Day];

    pub fn seconds(self) -> i64 {
        match self {
            Self::Hour => 3600,
            Self::Day => 86_400,
        }
    }

    /// The start of the bucket holding `ts_ms`, in Unix seconds (ClickHouse `DateTime`).
    pub fn bucket(self, ts_ms: i64) -> u32 {
        let secs = ts_ms.div_euclid(1000);
        u32::try_from(secs - secs.rem_euclid(self.seconds())).unwrap_or(0)
    }

    pub fn usage_table(self) -> &'static str {
        match self {
            Self::Hour => "usage_hourly",
            Self::Day => "usage_daily",
        }
    }
}

/// One row of `usage_hourly` or `usage_daily`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct UsageRow {
    pub project_id: String,
    pub bucket: u32,
    pub account_id: String,
    pub model: String,
    pub operation: String,
    pub kafka_partition: i32,
    pub events: u64,
    pub llm_requests: u64,
    pub llm_responses: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    /// Signed tokens of usage adjustments (credits are negative).
    pub adjusted_tokens: i64,
    pub cost_nanos: i64,
    pub provided_cost_nanos: i64,
    pub unpriced_events: u64,
    pub duration_count: u64,
    pub duration_sum_ms: u64,
    pub duration_hist: Vec<u64>,
    pub ttft_count: u64,
    pub ttft_sum_ms: u64,
    pub ttft_hist: Vec<u64>,
    pub kafka_offset: u64,
}

/// Identifies a usage row: bucket, partition and the dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub granularity: Granularity,
    pub project_id: String,
    pub bucket: u32,
    pub kafka_partition: i32,
    pub account_id: String,
    pub model: String,
    pub operation: String,
}

impl UsageKey {
    pub fn of(granularity: Granularity, project_id: &str, event: &Event, partition: i32) -> Self {
        Self {
            granularity,
            project_id: project_id.to_owned(),
            bucket: granularity.bucket(event.timestamp.0),
            kafka_partition: partition,
            account_id: event.account_id.clone(),
            model: event.model.clone().unwrap_or_default(),
            operation: event.operation.clone().unwrap_or_default(),
        }
    }

    pub fn of_row(granularity: Granularity, row: &UsageRow) -> Self {
        Self {
            granularity,
            project_id: row.project_id.clone(),
            bucket: row.bucket,
            kafka_partition: row.kafka_partition,
            account_id: row.account_id.clone(),
            model: row.model.clone(),
            operation: row.operation.clone(),
        }
    }
}

impl UsageRow {
    pub fn empty(key: &UsageKey) -> Self {
        Self {
            project_id: key.project_id.clone(),
            bucket: key.bucket,
            account_id: key.account_id.clone(),
            model: key.model.clone(),
            operation: key.operation.clone(),
            kafka_partition: key.kafka_partition,
            events: 0,
            llm_requests: 0,
            llm_responses: 0,
            errors: 0,
            input_tokens: 0,
            output_tokens: 0,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            adjusted_tokens: 0,
            cost_nanos: 0,
            provided_cost_nanos: 0,
            unpriced_events: 0,
            duration_count: 0,
            duration_sum_ms: 0,
            duration_hist: Vec::new(),
            ttft_count: 0,
            ttft_sum_ms: 0,
            ttft_hist: Vec::new(),
            kafka_offset: 0,
        }
    }

    pub fn has_applied(&self, partition: i32, offset: u64) -> bool {
        self.events > 0 && self.kafka_partition == partition && offset <= self.kafka_offset
    }

    pub fn fold(&mut self, event: &Event, cost: Priced, offset: u64) {
        self.events += 1;
        match event.event_type {
            EventType::LlmRequest => self.llm_requests += 1,
            EventType::LlmResponse => {
                self.llm_responses += 1;
                if let Some(ms) = event.duration_ms {
                    self.duration_count += 1;
                    self.duration_sum_ms += ms;
                    observe(&mut self.duration_hist, ms);
                }
                if let Some(ms) = event.time_to_first_token_ms {
                    self.ttft_count += 1;
                    self.ttft_sum_ms += ms;
                    observe(&mut self.ttft_hist, ms);
                }
            }
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
        self.adjusted_tokens = self.adjusted_tokens.saturating_add(event.adjusted_tokens());
        self.provided_cost_nanos = self
            .provided_cost_nanos
            .saturating_add(event.provided_cost_nanos.unwrap_or(0));
        match cost {
            Priced::Cost(nanos) => self.cost_nanos = self.cost_nanos.saturating_add(nanos),
            Priced::Unpriced => self.unpriced_events += 1,
            Priced::NoUsage => {}
        }
        self.kafka_offset = offset;
    }
}

/// One row of `tool_usage_hourly`.
#[derive(Debug, Clone, PartialEq, Eq, Row, Serialize, Deserialize)]
pub struct ToolRow {
    pub project_id: String,
    pub bucket: u32,
    pub tool_name: String,
    pub kafka_partition: i32,
    pub events: u64,
    pub calls: u64,
    pub results: u64,
    pub errors: u64,
    pub duration_count: u64,
    pub duration_sum_ms: u64,
    pub duration_hist: Vec<u64>,
    pub kafka_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ToolKey {
    pub project_id: String,
    pub bucket: u32,
    pub kafka_partition: i32,
    pub tool_name: String,
}

impl ToolKey {
    /// The key of a tool event; `None` for events without a tool.
    pub fn of(project_id: &str, event: &Event, partition: i32) -> Option<Self> {
        let tool = event.tool.as_ref()?;
        Some(Self {
            project_id: project_id.to_owned(),
            bucket: Granularity::Hour.bucket(event.timestamp.0),
            kafka_partition: partition,
            tool_name: tool.name.clone(),
        })
    }

    pub fn of_row(row: &ToolRow) -> Self {
        Self {
            project_id: row.project_id.clone(),
            bucket: row.bucket,
            kafka_partition: row.kafka_partition,
            tool_name: row.tool_name.clone(),
        }
    }
}

impl ToolRow {
    pub fn empty(key: &ToolKey) -> Self {
        Self {
            project_id: key.project_id.clone(),
            bucket: key.bucket,
            tool_name: key.tool_name.clone(),
            kafka_partition: key.kafka_partition,
            events: 0,
            calls: 0,
            results: 0,
            errors: 0,
            duration_count: 0,
            duration_sum_ms: 0,
            duration_hist: Vec::new(),
            kafka_offset: 0,
        }
    }

    pub fn has_applied(&self, partition: i32, offset: u64) -> bool {
        self.events > 0 && self.kafka_partition == partition && offset <= self.kafka_offset
    }

    pub fn fold(&mut self, event: &Event, offset: u64) {
        self.events += 1;
        match event.event_type {
            EventType::ToolCall => self.calls += 1,
            EventType::ToolResult => {
                self.results += 1;
                if let Some(ms) = event.duration_ms {
                    self.duration_count += 1;
                    self.duration_sum_ms += ms;
                    observe(&mut self.duration_hist, ms);
                }
            }
            _ => {}
        }
        if event.is_failure() || event.status == Some(Status::Error) {
            self.errors += 1;
        }
        self.kafka_offset = offset;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_bounds_grow_by_a_sixteenth_of_a_decade() {
        assert_eq!(LATENCY_BOUNDS_MS[0], 1);
        assert_eq!(LATENCY_BOUNDS_MS[16], 10);
        assert_eq!(LATENCY_BOUNDS_MS[32], 100);
        assert_eq!(LATENCY_BOUNDS_MS[96], 1_000_000);
        assert!(LATENCY_BOUNDS_MS.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(100), 32);
        assert_eq!(latency_bucket(101), 33);
        assert_eq!(latency_bucket(5_000_000), 97);
    }

    #[test]
    fn quantiles_are_bucket_upper_bounds_never_below_the_truth() {
        let mut hist = Vec::new();
        for ms in 1..=1000u64 {
            observe(&mut hist, ms);
        }
        for (q, truth) in [(0.5, 500u64), (0.9, 900), (0.99, 990)] {
            let got = histogram_quantile(&hist, q).expect("non-empty");
            assert!(
                got >= truth && (got as f64) <= truth as f64 * 1.155 + 1.0,
                "q{q}: {got} vs {truth}"
            );
        }
        assert_eq!(histogram_quantile(&[], 0.5), None);
    }

    #[test]
    fn buckets_are_utc_hours_and_days() {
        let ts = 1_763_805_845_123; // 2025-11-22T10:04:05.123Z
        assert_eq!(Granularity::Hour.bucket(ts), 1_763_805_600);
        assert_eq!(Granularity::Day.bucket(ts), 1_763_769_600);
    }
}
