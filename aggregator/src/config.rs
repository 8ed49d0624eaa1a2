//! The aggregator's configuration: `tally-aggregator --config FILE`, then `TALLY_…` overrides
//! (`TALLY_GROUP_ID=…`, `TALLY_KAFKA__BROKERS=…`, `TALLY_CLICKHOUSE__DATABASE=…`).

use crate::dedup::DedupConfig;
use serde::{Deserialize, Serialize};
use tally_quota::QuotaConfig;
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_runtime::kafka::KafkaConfig;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// Address of the health and metrics server (`/healthz`, `/readyz`, `/metrics`).
    pub listen: String,
    /// Kafka consumer group; replicas sharing it split the partitions.
    pub group_id: String,
    /// Most records folded and written in one ClickHouse batch.
    pub batch_max_events: usize,
    /// Longest wait to fill a batch once its first record arrived, in milliseconds.
    pub batch_max_wait_ms: u64,
    /// Rollup rows (sessions, usage, tools) kept in memory between batches; past it, rows
    /// the last batch did not touch are dropped and reloaded on demand.
    pub max_cached_rows: usize,
    /// Keys (sessions, and usage rows by bucket) the aggregator remembers as having a row in
    /// ClickHouse, so it never looks up a row that cannot exist yet; about 16 bytes each.
    /// Its partitions' sessions are read when they are assigned, a bucket's row keys when a
    /// batch first touches it. Past it, the oldest buckets' keys, then the
    /// largest partitions' sessions are forgotten, and their rows looked up on every miss.
    /// 0 turns the filter off: every row not in memory is looked up.
    pub max_known_keys: usize,
    /// A CSV of prices added to (or correcting) the built-in table, same columns as
    /// `schema/prices/prices.csv`. Empty: the built-in table alone.
    pub prices_file: String,
    /// Static group membership id (for example the pod name): a replica restarted with the
    /// same id gets its partitions back without waiting for a rebalance. Empty: dynamic.
    pub instance_id: String,
    /// Kafka consumer session timeout, in milliseconds.
    pub session_timeout_ms: u32,
    /// Days raw events are kept; a month partition of `events` is dropped once all of it is
    /// older. Rollups are kept for ever. 0 keeps raw events for ever.
    pub raw_retention_days: u32,
    /// How often retention runs, in seconds (at least 60).
    pub retention_interval_secs: u64,
    /// Longest pause between ClickHouse write retries, in milliseconds.
    pub max_retry_backoff_ms: u64,
    /// Create the event topic on start if it is missing.
    pub create_topic: bool,
    pub dedup: DedupConfig,
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    /// Plans and limits: the same section as ingest's, so alerts use the same limits.
    pub quota: QuotaConfig,
    pub alerts: AlertsConfig,
}

/// Threshold alerts: one record per account, limit, window and threshold crossed, to the
/// alerts topic and the `quota_alerts` table, and optionally to a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// URL (http) that gets each alert as a JSON POST; empty for none.
    pub webhook_url: String,
    /// Attempts per alert (exponential backoff from 200 ms) before the webhook call is
    /// given up and logged; the alert itself is already in Kafka and ClickHouse.
    pub webhook_max_attempts: u32,
    /// How often accounts whose usage changed are checked against their thresholds, in ms.
    pub evaluate_interval_ms: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: String::new(),
            webhook_max_attempts: 5,
            evaluate_interval_ms: 500,
        }
    }
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            group_id: "tally-aggregator".into(),
            batch_max_events: 20_000,
            batch_max_wait_ms: 200,
            max_cached_rows: 500_000,
            max_known_keys: 10_000_000,
            prices_file: String::new(),
            instance_id: String::new(),
            session_timeout_ms: 10_000,
            raw_retention_days: 90,
            retention_interval_secs: 3600,
            max_retry_backoff_ms: 10_000,
            create_topic: true,
            dedup: DedupConfig::default(),
            kafka: KafkaConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            quota: QuotaConfig::default(),
            alerts: AlertsConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/local/aggregator.toml` and the `quota.toml` both services read.
    fn shipped() -> Vec<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local");
        vec![root.join("aggregator.toml"), root.join("quota.toml")]
    }

    #[test]
    fn the_shipped_config_reads() {
        let config: AggregatorConfig = tally_runtime::config::load(&shipped()).expect("reads");
        assert!(config.quota.validate().is_ok());
        assert_eq!(config.quota, tally_quota::QuotaConfig::default());
    }

    #[test]
    fn the_shipped_config_shows_every_field() {
        let defaults = serde_json::to_value(AggregatorConfig::default()).expect("json");
        let missing = tally_runtime::config::undocumented(&defaults, &shipped(), &["quota.plans"])
            .expect("files read");
        assert!(
            missing.is_empty(),
            "fields of AggregatorConfig missing from deploy/local/aggregator.toml or quota.toml \
             (add them there, with a comment saying what they do): {missing:?}"
        );
    }
}
