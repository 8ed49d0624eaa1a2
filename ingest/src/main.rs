use clap::Parser;

// The write path allocates many small, short-lived objects per event (JSON values, strings,
// the envelope); mimalloc serves them faster than the system allocator (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use std::time::Duration;
use tally_ingest::config::IngestConfig;

/// Tally ingest: receives event batches over HTTP, publishes them to Kafka, and serves the
/// read API from ClickHouse.
///
/// Configuration comes from the TOML file, then from TALLY_… environment variables
/// (TALLY_LISTEN, TALLY_KAFKA__BROKERS, TALLY_CLICKHOUSE__URL, …); see the README.
#[derive(Debug, Parser)]
#[command(name = "tally-ingest", version)]
struct Cli {
    /// TOML configuration files, merged in order, a later one over an earlier one
    /// (`--config ingest.toml --config quota.toml`; `TALLY_CONFIG` takes them comma-separated).
    #[arg(long, short, env = "TALLY_CONFIG", value_delimiter = ',')]
    config: Vec<PathBuf>,
    /// Print the configuration in effect (keys are hashes, passwords hidden) and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = tally_runtime::logging::init_service("tally-ingest");
    let config: IngestConfig = tally_runtime::config::load(&cli.config)?;
    if cli.print_config {
        println!("{}", printable(&config));
        return Ok(());
    }
    // The quota topic must be compacted; creating it here keeps a broker's auto-creation from
    // making it first. Kafka may be down at start: ingest then starts not-ready and retries.
    match tokio::time::timeout(Duration::from_secs(10), config.kafka.ensure_topics()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(%err, "cannot create topics"),
        Err(_) => tracing::warn!("kafka did not answer; topics not checked"),
    }
    let roles = format!("{:?}", config.roles);
    let (running, server) = tally_ingest::build(config)?;
    tracing::info!(addr = %running.addr, %roles, "tally-ingest listening");
    server.await?;
    // The server has stopped accepting and finished its requests; deliver what is queued.
    running.sink.flush(Duration::from_secs(10));
    tracing::info!("tally-ingest stopped");
    Ok(())
}

/// Endings of the fields whose values `--print-config` never shows.
const SECRET_FIELDS: [&str; 3] = ["password", "secret", "token"];

/// The configuration as JSON, with every non-empty secret replaced by `"(hidden)"`.
fn printable(config: &IngestConfig) -> String {
    let mut value = serde_json::to_value(config).unwrap_or_default();
    hide_secrets(&mut value);
    serde_json::to_string_pretty(&value).unwrap_or_default()
}

fn hide_secrets(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map.iter_mut() {
                if SECRET_FIELDS.iter().any(|end| key.ends_with(end))
                    && inner.as_str().is_some_and(|s| !s.is_empty())
                {
                    *inner = serde_json::Value::from("(hidden)");
                } else {
                    hide_secrets(inner);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(hide_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_config_hides_the_clickhouse_password() {
        let mut config = IngestConfig::default();
        config.clickhouse.password = "s3cr3t-value".into();
        let printed = printable(&config);
        assert!(!printed.contains("s3cr3t-value"), "{printed}");
        assert!(printed.contains("\"password\": \"(hidden)\""), "{printed}");
        assert!(
            printed.contains("\"database\""),
            "the rest is shown: {printed}"
        );
    }
}
