//! What both services' Prometheus metrics share: registering, latency buckets, rendering.

use prometheus::core::Collector;
use prometheus::{exponential_buckets, Encoder, Registry, TextEncoder};

/// Registers a metric in `registry` and hands it back, so a metrics struct is built one
/// field at a time. Definitions are fixed in code: an invalid one is a bug, caught by tests.
pub fn register<M: Collector + Clone + 'static>(
    registry: &Registry,
    metric: prometheus::Result<M>,
) -> M {
    let metric = metric.expect("metric definitions are valid");
    registry
        .register(Box::new(metric.clone()))
        .expect("metric names are unique");
    metric
}

/// Latency buckets in seconds: 0.5 ms doubling up to about 16 s.
pub fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.0, 16).expect("valid buckets")
}

/// The Prometheus text exposition of every metric in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}
