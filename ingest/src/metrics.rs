//! ingest's Prometheus metrics, served at `/metrics`.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub in_flight: IntGauge,
    pub events: IntCounterVec,
    pub batch_events: HistogramVec,
    pub produce_duration: HistogramVec,
    pub producer_queue: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tally_ingest_http_requests_total",
                "HTTP requests by route and status.",
            ),
            &["route", "status"],
        )
        .expect("valid metric");
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "tally_ingest_http_request_duration_seconds",
                "HTTP request latency.",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            &["route"],
        )
        .expect("valid metric");
        let in_flight = IntGauge::new(
            "tally_ingest_http_requests_in_flight",
            "HTTP requests being served.",
        )
        .expect("valid metric");
        let events = IntCounterVec::new(
            Opts::new(
                "tally_ingest_events_total",
                "Events by outcome (accepted, rejected) and reason.",
            ),
            &["outcome", "reason"],
        )
        .expect("valid metric");
        let batch_events = HistogramVec::new(
            HistogramOpts::new("tally_ingest_batch_events", "Events per posted batch.")
                .buckets(exponential_buckets(1.0, 4.0, 7).expect("valid buckets")),
            &[],
        )
        .expect("valid metric");
        let produce_duration = HistogramVec::new(
            HistogramOpts::new(
                "tally_ingest_kafka_produce_duration_seconds",
                "Time from producing a batch to Kafka acknowledging all of it.",
            )
            .buckets(exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")),
            &["result"],
        )
        .expect("valid metric");
        let producer_queue = IntGauge::new(
            "tally_ingest_kafka_producer_queue_messages",
            "Records waiting in the Kafka producer queue.",
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_duration.clone()),
            Box::new(in_flight.clone()),
            Box::new(events.clone()),
            Box::new(batch_events.clone()),
            Box::new(produce_duration.clone()),
            Box::new(producer_queue.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric names are unique");
        }
        Self {
            registry,
            requests,
            request_duration,
            in_flight,
            events,
            batch_events,
            produce_duration,
            producer_queue,
        }
    }

    /// The Prometheus text exposition of every metric.
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
