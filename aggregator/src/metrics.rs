//! The aggregator's Prometheus metrics, and its health state.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::atomic::{AtomicBool, Ordering};

pub struct Metrics {
    registry: Registry,
    /// Records by outcome: folded, resend (skipped), redelivery (skipped), dead_lettered.
    pub records: IntCounterVec,
    pub rows_written: IntCounterVec,
    /// Time per batch in each phase: decode, load, fold, write, commit.
    pub phase_duration: HistogramVec,
    pub write_failures: IntCounterVec,
    pub assigned_partitions: IntGauge,
    /// Records not yet folded, per assigned partition (from librdkafka's statistics).
    pub lag: IntGaugeVec,
    /// Events with usage whose model had no price (folded at zero cost, flagged on the rows).
    pub unpriced: IntCounter,
    /// Rebuild control records applied.
    pub rebuilds: IntCounter,
    /// False while ClickHouse writes fail; `/readyz` answers 503 then.
    pub writing: AtomicBool,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let records = IntCounterVec::new(
            Opts::new(
                "tally_aggregator_records_total",
                "Kafka records by outcome.",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let rows_written = IntCounterVec::new(
            Opts::new(
                "tally_aggregator_rows_written_total",
                "Rows written to ClickHouse by table.",
            ),
            &["table"],
        )
        .expect("valid metric");
        let phase_duration = HistogramVec::new(
            HistogramOpts::new(
                "tally_aggregator_batch_phase_duration_seconds",
                "Time one batch spends in each phase: decode, load (rows from ClickHouse), fold, write, commit.",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            &["phase"],
        )
        .expect("valid metric");
        let write_failures = IntCounterVec::new(
            Opts::new(
                "tally_aggregator_write_failures_total",
                "Failed ClickHouse writes (each is retried).",
            ),
            &[],
        )
        .expect("valid metric");
        let assigned_partitions = IntGauge::new(
            "tally_aggregator_assigned_partitions",
            "Partitions assigned to this replica.",
        )
        .expect("valid metric");
        let unpriced = IntCounter::new(
            "tally_aggregator_unpriced_events_total",
            "Events with token usage whose model has no price at their time.",
        )
        .expect("valid metric");
        let lag = IntGaugeVec::new(
            Opts::new(
                "tally_aggregator_consumer_lag_records",
                "Records behind the partition's end, per partition.",
            ),
            &["partition"],
        )
        .expect("valid metric");
        let rebuilds = IntCounter::new(
            "tally_aggregator_rebuilds_total",
            "Rebuild requests applied (one per partition and request).",
        )
        .expect("valid metric");
        for collector in [
            Box::new(rebuilds.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lag.clone()),
            Box::new(unpriced.clone()),
            Box::new(records.clone()),
            Box::new(rows_written.clone()),
            Box::new(phase_duration.clone()),
            Box::new(write_failures.clone()),
            Box::new(assigned_partitions.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            records,
            rows_written,
            phase_duration,
            write_failures,
            assigned_partitions,
            unpriced,
            rebuilds,
            lag,
            writing: AtomicBool::new(true),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.writing.load(Ordering::Relaxed)
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
