//! The aggregator's Prometheus metrics, and its health state.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::atomic::{AtomicBool, Ordering};
use tally_runtime::metrics::{latency_buckets, register};

pub struct Metrics {
    registry: Registry,
    /// Records by outcome: folded, resend (skipped), redelivery (skipped), dead_lettered.
    pub records: IntCounterVec,
    pub rows_written: IntCounterVec,
    /// Time per batch in each phase: decode, known, load, fold, write, quota, commit, rebuild.
    pub phase_duration: HistogramVec,
    pub write_failures: IntCounter,
    pub assigned_partitions: IntGauge,
    /// Records not yet folded, per assigned partition (from librdkafka's statistics).
    pub lag: IntGaugeVec,
    /// Events with usage whose model had no price (folded at zero cost, flagged on the rows).
    pub unpriced: IntCounter,
    /// Rebuild control records applied.
    pub rebuilds: IntCounter,
    /// Quota counter records published to the quota topic.
    pub quota_published: IntCounter,
    /// Threshold alerts emitted, by threshold.
    pub quota_alerts: IntCounterVec,
    /// Failed publishes to the quota or alert topics (each is retried).
    pub quota_publish_failures: IntCounter,
    pub quota_refused_accounts: IntCounter,
    /// Keys remembered as having a row in ClickHouse (see `known.rs`), against `max_known_keys`.
    pub known_keys: IntGauge,
    /// False while ClickHouse writes fail; `/readyz` answers 503 then.
    pub writing: AtomicBool,
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            records: register(
                &r,
                IntCounterVec::new(Opts::new("tally_aggregator_records_total", "Kafka records by outcome."), &["outcome"]),
            ),
            rows_written: register(
                &r,
                IntCounterVec::new(
                    Opts::new("tally_aggregator_rows_written_total", "Rows written to ClickHouse by table."),
                    &["table"],
                ),
            ),
            phase_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tally_aggregator_batch_phase_duration_seconds",
                        "Time one batch spends in each phase: decode, known (which rows exist), load (rows from ClickHouse), fold, write, quota, commit, rebuild.",
                    )
                    .buckets(latency_buckets()),
                    &["phase"],
                ),
            ),
            write_failures: register(
                &r,
                IntCounter::new("tally_aggregator_write_failures_total", "Failed ClickHouse calls (each is retried)."),
            ),
            assigned_partitions: register(
                &r,
                IntGauge::new("tally_aggregator_assigned_partitions", "Partitions assigned to this replica."),
            ),
            lag: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("tally_aggregator_consumer_lag_records", "Records behind the partition's end, per partition."),
                    &["partition"],
                ),
            ),
            unpriced: register(
                &r,
                IntCounter::new(
                    "tally_aggregator_unpriced_events_total",
                    "Events with token usage whose model has no price at their time.",
                ),
            ),
            rebuilds: register(
                &r,
                IntCounter::new(
                    "tally_aggregator_rebuilds_total",
                    "Rebuild requests applied (one per partition and request).",
                ),
            ),
            quota_published: register(
                &r,
                IntCounter::new(
                    "tally_aggregator_quota_counters_published_total",
                    "Quota counter records published to the quota topic.",
                ),
            ),
            quota_alerts: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tally_aggregator_quota_alerts_total",
                        "Quota threshold alerts emitted, by threshold.",
                    ),
                    &["threshold"],
                ),
            ),
            quota_publish_failures: register(
                &r,
                IntCounter::new(
                    "tally_aggregator_quota_publish_failures_total",
                    "Failed publishes to the quota or alert topics (each is retried).",
                ),
            ),
            quota_refused_accounts: register(
                &r,
                IntCounter::new(
                    "tally_aggregator_quota_refused_accounts_total",
                    "New accounts given no quota counters: their project, or the replica, was \
                     at its [quota.accounts] cap (their usage still folds into the rollups).",
                ),
            ),
            known_keys: register(
                &r,
                IntGauge::new(
                    "tally_aggregator_known_keys",
                    "Keys (sessions; usage rows by bucket) remembered as having a row, so rows \
                     that cannot exist are not looked up; bounded by max_known_keys.",
                ),
            ),
            registry: r,
            writing: AtomicBool::new(true),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.writing.load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        tally_runtime::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
