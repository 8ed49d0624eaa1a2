//! JSON logs on stderr, one object per line, with the level from `RUST_LOG` (default `info`);
//! and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, traces exported over OTLP/HTTP (protobuf)
//! to that endpoint (the standard `OTEL_*` variables tune the exporter and batching).

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Keeps the trace exporter alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

/// Installs the global JSON logger at `info`. Safe to call more than once (later calls do nothing).
pub fn init() {
    init_with_default("info");
}

/// Installs the global JSON logger; `RUST_LOG` wins over `default_level`.
pub fn init_with_default(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The JSON logger of in-process services in tests: through the test harness's capture, so a
/// test's logs (deliberate outages included) show only when it fails. `RUST_LOG` wins over
/// `default_level`.
pub fn init_for_tests(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_test_writer()
        .try_init();
}

/// JSON logs as [`init`], plus OTLP trace export for `service` when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set. Keep the guard until the process ends.
pub fn init_service(service: &'static str) -> TelemetryGuard {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_writer(std::io::stderr);
    let provider = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.is_empty())
        .and_then(|_| match otlp_provider(service) {
            Ok(provider) => Some(provider),
            Err(err) => {
                eprintln!("OTLP trace export disabled: {err}");
                None
            }
        });
    // RUST_LOG chooses what is logged; spans go to OTLP at info whatever the log level.
    let registry = tracing_subscriber::registry().with(json.with_filter(filter()));
    match &provider {
        Some(provider) => {
            let tracer = provider.tracer(service);
            let spans = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(EnvFilter::new("info"));
            let _ = registry.with(spans).try_init();
        }
        None => {
            let _ = registry.try_init();
        }
    }
    TelemetryGuard { provider }
}

fn otlp_provider(service: &'static str) -> anyhow::Result<SdkTracerProvider> {
    // The endpoint and the rest come from the standard OTEL_EXPORTER_OTLP_* variables.
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}
