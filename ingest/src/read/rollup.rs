//! Reading the usage rollups over a time range: which buckets of `usage_daily` and
//! `usage_hourly` cover it, the filters every metrics query takes, the values each metrics
//! query binds, and latency figures from the rollups' histograms.

use super::params::AlignedRange;
use clickhouse::query::Query as Statement;
use serde::Serialize;
use tally_schema::queries::params::Params;
use tally_schema::queries::{self, Query};
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

/// What every metrics query reads: a project's rollups over a range, filtered. Bound in the
/// order of the placeholders of the rollup union that `metrics_*.sql` share: the daily part,
/// then the hourly part.
#[derive(Debug, Clone, Copy)]
pub struct RollupScope<'a> {
    pub project_id: &'a str,
    pub range: &'a RollupRange,
    pub filters: &'a RollupFilters,
}

impl RollupScope<'_> {
    /// Binds the scope to a statement of the rollup union (a metrics query, or a variant of
    /// one on other tables).
    pub fn bind(&self, mut statement: Statement) -> Statement {
        let filters = self.filters;
        let bind_filters = |statement: Statement| {
            statement
                .bind(&filters.account_id)
                .bind(&filters.account_id)
                .bind(&filters.model)
                .bind(&filters.model)
                .bind(&filters.operation)
                .bind(&filters.operation)
        };
        statement = statement
            .bind(self.project_id)
            .bind(self.range.days.0)
            .bind(self.range.days.1);
        statement = bind_filters(statement).bind(self.project_id);
        for (from, to) in self.range.hours {
            statement = statement.bind(from).bind(to);
        }
        bind_filters(statement)
    }
}

/// The totals of a scope ([`queries::METRICS_TOTALS`]).
pub struct MetricsTotals<'a>(pub RollupScope<'a>);

impl Params for MetricsTotals<'_> {
    fn query(&self) -> Query {
        queries::METRICS_TOTALS
    }
    fn bind(self, statement: Statement) -> Statement {
        self.0.bind(statement)
    }
}

/// The latency histograms of a scope by model ([`queries::METRICS_LATENCY`]).
pub struct MetricsLatency<'a>(pub RollupScope<'a>);

impl Params for MetricsLatency<'_> {
    fn query(&self) -> Query {
        queries::METRICS_LATENCY
    }
    fn bind(self, statement: Statement) -> Statement {
        self.0.bind(statement)
    }
}

/// The cost of a scope by `group` (`model`, `operation`, `account`), `limit` groups at most
/// ([`queries::METRICS_COST`]).
pub struct MetricsCost<'a> {
    pub group: &'a str,
    pub scope: RollupScope<'a>,
    pub limit: u64,
}

impl Params for MetricsCost<'_> {
    fn query(&self) -> Query {
        queries::METRICS_COST
    }
    fn bind(self, statement: Statement) -> Statement {
        let statement = statement.bind(self.group).bind(self.group).bind(self.group);
        self.scope.bind(statement).bind(self.limit)
    }
}

/// A usage series of a scope: points every `step` seconds from `offset`, by `group` (or
/// none when empty), `limit` rows at most ([`queries::METRICS_USAGE`]).
pub struct MetricsUsage<'a> {
    pub step: i64,
    pub offset: i64,
    pub group: &'a str,
    pub scope: RollupScope<'a>,
    pub limit: u64,
}

impl Params for MetricsUsage<'_> {
    fn query(&self) -> Query {
        queries::METRICS_USAGE
    }
    fn bind(self, statement: Statement) -> Statement {
        let statement = statement
            .bind(self.offset)
            .bind(self.step)
            .bind(self.step)
            .bind(self.offset)
            .bind(self.group)
            .bind(self.group)
            .bind(self.group);
        self.scope.bind(statement).bind(self.limit)
    }
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
