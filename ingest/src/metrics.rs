//! ingest's Prometheus metrics, served at `/metrics`.

use prometheus::{
    exponential_buckets, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, Opts, Registry,
};
use tally_runtime::metrics::{latency_buckets, register};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub in_flight: IntGauge,
    /// Events by outcome (accepted, rejected) and, for rejections, the reason code.
    pub events: IntCounterVec,
    pub batch_events: Histogram,
    pub produce_duration: HistogramVec,
    pub producer_queue: IntGauge,
    /// Quota checks by outcome (allowed, refused) and refusal reason.
    pub quota_checks: IntCounterVec,
    pub quota_check_duration: Histogram,
    /// Seconds since the quota view last heard from `tally.quota.v1`.
    pub quota_view_staleness: Gauge,
    pub quota_view_refused_accounts: IntCounter,
    pub quota_view_accounts: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tally_ingest_http_requests_total",
                        "HTTP requests by route and status.",
                    ),
                    &["route", "status"],
                ),
            ),
            request_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tally_ingest_http_request_duration_seconds",
                        "HTTP request latency.",
                    )
                    .buckets(latency_buckets()),
                    &["route"],
                ),
            ),
            in_flight: register(
                &r,
                IntGauge::new(
                    "tally_ingest_http_requests_in_flight",
                    "HTTP requests being served.",
                ),
            ),
            events: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tally_ingest_events_total",
                        "Events by outcome (accepted, rejected) and reason.",
                    ),
                    &["outcome", "reason"],
                ),
            ),
            batch_events: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("tally_ingest_batch_events", "Events per posted batch.")
                        .buckets(exponential_buckets(1.0, 4.0, 7).expect("valid buckets")),
                ),
            ),
            produce_duration: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "tally_ingest_kafka_produce_duration_seconds",
                        "Time from producing a batch to Kafka acknowledging all of it.",
                    )
                    .buckets(latency_buckets()),
                    &["result"],
                ),
            ),
            producer_queue: register(
                &r,
                IntGauge::new(
                    "tally_ingest_kafka_producer_queue_messages",
                    "Records waiting in the Kafka producer queue.",
                ),
            ),
            quota_checks: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "tally_ingest_quota_checks_total",
                        "Quota checks by outcome and refusal reason.",
                    ),
                    &["outcome", "reason"],
                ),
            ),
            quota_check_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "tally_ingest_quota_check_duration_seconds",
                        "Time to decide a quota check, without HTTP.",
                    )
                    .buckets(exponential_buckets(0.000_001, 4.0, 10).unwrap_or_default()),
                ),
            ),
            quota_view_staleness: register(
                &r,
                Gauge::new(
                    "tally_ingest_quota_view_staleness_seconds",
                    "Seconds since the quota view last heard from its Kafka topic.",
                ),
            ),
            quota_view_accounts: register(
                &r,
                IntGauge::new(
                    "tally_ingest_quota_view_accounts",
                    "Accounts in the in-memory quota view.",
                ),
            ),
            quota_view_refused_accounts: register(
                &r,
                IntCounter::new(
                    "tally_ingest_quota_view_refused_accounts_total",
                    "Counter records of new accounts the quota view did not keep: their \
                     project, or the view, was at its [quota.accounts] cap.",
                ),
            ),
            registry: r,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        tally_runtime::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
