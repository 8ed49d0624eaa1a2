//! tally-aggregator: the Kafka consumer group that folds events into ClickHouse.
//!
//! [`consumer::Aggregator`] reads `tally.events.v1`, [`fold::Folder`] applies each record
//! exactly once to the raw event store and the session rollups (looking up only rows that
//! may exist, [`known`]), [`store::Store`] writes them, and offsets are committed only after
//! ClickHouse has the rows. It also restores and
//! publishes the quota counters (`consumer/quota.rs`, with `tally_quota::QuotaLedger`),
//! emits threshold alerts ([`alerts`]), dead-letters what cannot be folded, drops expired
//! months and rebuilds rollups on request. The rows and queries are `tally-schema`'s, the
//! quota rules `tally-quota`'s; the HTTP API is ingest's.

pub mod alerts;
pub mod config;
pub mod consumer;
pub mod dead_letter;
pub mod dedup;
pub mod fold;
pub mod health;
pub mod known;
pub mod metrics;
pub mod rebuild;
pub mod retention;
pub mod store;

use std::sync::Arc;
use tokio::sync::watch;

/// A running aggregator: the address of its health server, and how to stop it.
pub struct Running {
    pub addr: std::net::SocketAddr,
    pub metrics: Arc<metrics::Metrics>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    health: actix_web::dev::ServerHandle,
}

impl Running {
    /// Finishes the batch in hand, then stops.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let result = self.task.await?;
        self.health.stop(true).await;
        result
    }

    /// Waits until the fold loop ends (on error, or after [`Running::stop`] elsewhere).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }

    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// The built-in price table, plus the rows of `prices_file` when one is configured.
pub fn load_prices(prices_file: &str) -> anyhow::Result<tally_schema::pricing::PriceTable> {
    let mut prices = tally_schema::pricing::PriceTable::built_in();
    if !prices_file.is_empty() {
        let text = std::fs::read_to_string(prices_file)
            .map_err(|err| anyhow::anyhow!("cannot read prices_file {prices_file}: {err}"))?;
        prices.add_csv(&text)?;
    }
    Ok(prices)
}

/// Applies migrations, creates the topic if asked, then starts folding and the health server.
pub async fn start(config: config::AggregatorConfig) -> anyhow::Result<Running> {
    let applied = tally_runtime::migrate::run(&config.clickhouse).await?;
    if !applied.is_empty() {
        tracing::info!(?applied, "migrations applied");
    }
    if config.create_topic {
        config.kafka.ensure_topics().await?;
    }
    let prices = load_prices(&config.prices_file)?;
    let client = config.clickhouse.connect().await?;
    let metrics = Arc::new(metrics::Metrics::new());
    let listener = std::net::TcpListener::bind(&config.listen)
        .map_err(|err| anyhow::anyhow!("cannot listen on {}: {err}", config.listen))?;
    let addr = listener.local_addr()?;
    let health = health::start(metrics.clone(), listener)?;
    let health_handle = health.handle();
    tokio::spawn(health);

    let (stop, shutdown) = watch::channel(false);
    if config.raw_retention_days > 0 {
        tokio::spawn(retention::run(
            client.clone(),
            config.clickhouse.database.clone(),
            config.raw_retention_days,
            std::time::Duration::from_secs(config.retention_interval_secs.max(60)),
            shutdown.clone(),
        ));
    }
    let owned = Arc::new(std::sync::RwLock::new(std::collections::BTreeSet::new()));
    let partitions = events_partitions(&config.kafka);
    let alerter = alerts::Alerter::new(
        config.quota.clone(),
        config.alerts.clone(),
        &config.kafka,
        partitions,
        owned.clone(),
        store::Store::new(client.clone()),
        metrics.clone(),
    )?;
    tokio::spawn(alerter.run(shutdown.clone()));
    let aggregator =
        consumer::Aggregator::new(config, prices, client, metrics.clone(), owned, shutdown)?;
    let task = tokio::spawn(aggregator.run());
    Ok(Running {
        addr,
        metrics,
        stop,
        task,
        health: health_handle,
    })
}

/// The events topic's partition count as the broker tells it (the configured count if the
/// broker cannot be asked): account alert ownership hashes over it.
fn events_partitions(kafka: &tally_runtime::kafka::KafkaConfig) -> i32 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let asked = kafka
        .client_config()
        .create::<BaseConsumer>()
        .ok()
        .and_then(|c| {
            c.fetch_metadata(Some(&kafka.events_topic), std::time::Duration::from_secs(5))
                .ok()
        })
        .and_then(|m| m.topics().first().map(|t| t.partitions().len()))
        .and_then(|n| i32::try_from(n).ok())
        .filter(|n| *n > 0);
    asked.unwrap_or(kafka.events_partitions)
}
