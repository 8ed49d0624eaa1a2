//! Reading the usage rollups over a time range: which buckets of `usage_daily` and
//! `usage_hourly` cover it, the filters every metrics query takes, and latency figures from
//! the rollups' histograms.

use super::params::AlignedRange;
use serde::Serialize;
use tally_schema::rollups::histogram_quantile;

const DAY_SECS: u32 = 86_400;

/// The buckets that cover an hour-aligned range: whole UTC days from the daily rollup, the
/// hours before the first and after the last whole day from the hourly one. An empty range
/// is `(0, 0)`. The two never overlap, so every event is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollupRange {
    pub days: (u32, u32),
    pub hours: [(u32, u32); 2],
}

impl RollupRange {
    /// Daily rows wherever a whole day fits, hourly rows for the rest.
    pub fn split(range: AlignedRange) -> Self {
        let first_day = range.from.div_ceil(DAY_SECS) * DAY_SECS;
        let end_of_days = range.to / DAY_SECS * DAY_SECS;
        if first_day >= end_of_days {
            return Self::hourly(range);
        }
        Self {
            days: (first_day, end_of_days),
            hours: [(range.from, first_day), (end_of_days, range.to)],
        }
    }

    /// Hourly rows only (for answers by the hour).
    pub fn hourly(range: AlignedRange) -> Self {
        Self {
            days: (0, 0),
            hours: [(range.from, range.to), (0, 0)],
        }
    }
}

/// Filters of the usage rollups; an empty string is no filter (the queries test `? = ''`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RollupFilters {
    pub account_id: String,
    pub model: String,
    pub operation: String,
}

/// Binds the range and the filters of the rollup union that `metrics_*.sql` share, in the
/// order of its placeholders: the daily part, then the hourly part.
pub fn bind_rollups(
    mut query: clickhouse::query::Query,
    project_id: &str,
    range: &RollupRange,
    filters: &RollupFilters,
) -> clickhouse::query::Query {
    let bind_filters = |query: clickhouse::query::Query| {
        query
            .bind(&filters.account_id)
            .bind(&filters.account_id)
            .bind(&filters.model)
            .bind(&filters.model)
            .bind(&filters.operation)
            .bind(&filters.operation)
    };
    query = query.bind(project_id).bind(range.days.0).bind(range.days.1);
    query = bind_filters(query).bind(project_id);
    for (from, to) in range.hours {
        query = query.bind(from).bind(to);
    }
    bind_filters(query)
}

/// Count, average and percentiles of latencies kept as a rollup histogram.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Latencies measured.
    pub count: u64,
    /// Exact average; null without data.
    pub avg_ms: Option<f64>,
    /// Upper bound of the histogram bucket holding the percentile (see `accuracy`); null
    /// without data or above the histogram's last bound (1000 s).
    pub p50_ms: Option<u64>,
    pub p75_ms: Option<u64>,
    pub p90_ms: Option<u64>,
    pub p95_ms: Option<u64>,
    pub p99_ms: Option<u64>,
}

impl LatencyStats {
    pub fn of(count: u64, sum_ms: u64, hist: &[u64]) -> Self {
        let quantile = |q: f64| histogram_quantile(hist, q).filter(|&ms| ms != u64::MAX);
        Self {
            count,
            avg_ms: (count > 0).then(|| sum_ms as f64 / count as f64),
            p50_ms: quantile(0.50),
            p75_ms: quantile(0.75),
            p90_ms: quantile(0.90),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
        }
    }
}

/// Adds histogram `other` into `sum`, bucket by bucket; sums of histograms are exact.
pub fn add_histogram(sum: &mut Vec<u64>, other: &[u64]) {
    if sum.len() < other.len() {
        sum.resize(other.len(), 0);
    }
    for (total, count) in sum.iter_mut().zip(other) {
        *total += count;
    }
}

/// How exact the latency figures are, stated in every answer that has percentiles.
#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    /// `exact`.
    pub averages: &'static str,
    /// `bucket_upper_bound`: a percentile is the upper bound of the histogram bucket that
    /// holds it (16 log-spaced buckets per decade from 1 ms to 1000 s).
    pub percentiles: &'static str,
    /// A percentile is never below the true value and at most this fraction above it.
    pub percentile_max_overestimate: f64,
}

pub const ACCURACY: Accuracy = Accuracy {
    averages: "exact",
    percentiles: "bucket_upper_bound",
    percentile_max_overestimate: 0.155,
};
