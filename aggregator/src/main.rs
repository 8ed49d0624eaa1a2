use clap::{Parser, Subcommand};

// Batches allocate and free many rows, strings and histograms at once; mimalloc returns that
// memory where the system allocator keeps it fragmented (BENCHMARKS.md, section 7).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::PathBuf;
use tally_aggregator::config::AggregatorConfig;

/// Tally aggregator: folds events from Kafka into ClickHouse, exactly once in effect.
///
/// Configuration comes from the TOML file, then from TALLY_… environment variables
/// (TALLY_GROUP_ID, TALLY_KAFKA__BROKERS, TALLY_CLICKHOUSE__URL, …); see the README.
#[derive(Debug, Parser)]
#[command(name = "tally-aggregator", version)]
struct Cli {
    /// TOML configuration files, merged in order, a later one over an earlier one
    /// (`--config ingest.toml --config quota.toml`; `TALLY_CONFIG` takes them comma-separated).
    #[arg(
        long,
        short,
        env = "TALLY_CONFIG",
        value_delimiter = ',',
        global = true
    )]
    config: Vec<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply migrations, then fold events until SIGINT or SIGTERM (the default).
    Run,
    /// Apply pending schema migrations and exit.
    Migrate,
    /// Recompute every rollup of a time range from the raw events (re-pricing them with the
    /// current price table), while folding goes on. Times are YYYY-MM-DD or RFC 3339; the
    /// range widens to whole UTC days. Running aggregators apply it; this only asks.
    Rebuild {
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = tally_runtime::logging::init_service("tally-aggregator");
    let config: AggregatorConfig = tally_runtime::config::load(&cli.config)?;
    match cli.command.unwrap_or(Command::Run) {
        Command::Migrate => {
            let applied = tally_runtime::migrate::run(&config.clickhouse).await?;
            tracing::info!(?applied, database = %config.clickhouse.database, "migrations up to date");
        }
        Command::Rebuild { from, to } => {
            let (from, to) = (
                tally_aggregator::rebuild::parse_time(&from)?,
                tally_aggregator::rebuild::parse_time(&to)?,
            );
            let partitions = tally_aggregator::rebuild::request(&config.kafka, from, to).await?;
            println!(
                "rebuild of [{from}, {to}) requested on {partitions} partitions of {}; \
                 each aggregator logs \"rebuilt rollups\" and counts tally_aggregator_rebuilds_total as it applies it",
                config.kafka.events_topic
            );
        }
        Command::Run => {
            let mut running = tally_aggregator::start(config).await?;
            tracing::info!(addr = %running.addr, "tally-aggregator running");
            let stopper = running.stopper();
            tokio::select! {
                result = running.wait() => result?,
                _ = shutdown_signal() => {
                    let _ = stopper.send(true);
                    running.wait().await?;
                }
            }
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}
