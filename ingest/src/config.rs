//! ingest's configuration: `tally-ingest --config FILE`, then `TALLY_…` overrides
//! (`TALLY_LISTEN=127.0.0.1:8080`, `TALLY_KAFKA__BROKERS=…`, `TALLY_LIMITS__MAX_BATCH_EVENTS=…`).

use crate::auth::ProjectConfig;
use crate::ratelimit::RateLimitConfig;
use crate::sink::ProducerConfig;
use serde::{Deserialize, Serialize};
use tally_quota::QuotaConfig;
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_runtime::kafka::KafkaConfig;
use tally_schema::validate::Limits;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// Largest request body, in bytes, after decompression; larger is refused with 413.
    pub max_body_bytes: usize,
    /// Seconds to finish in-flight requests at shutdown.
    pub shutdown_timeout_secs: u64,
    pub kafka: KafkaConfig,
    pub producer: ProducerConfig,
    pub clickhouse: ClickHouseConfig,
    pub limits: Limits,
    /// Per-key rate limits of the write path.
    pub rate_limit: RateLimitConfig,
    /// Projects and their keys (stored as SHA-256 hashes).
    pub projects: Vec<ProjectConfig>,
    /// Plans, limits and the quota check's behaviour (the aggregator reads the same section).
    pub quota: QuotaConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            max_body_bytes: 5 * 1024 * 1024,
            shutdown_timeout_secs: 30,
            kafka: KafkaConfig::default(),
            producer: ProducerConfig::default(),
            clickhouse: ClickHouseConfig::default(),
            limits: Limits::default(),
            rate_limit: RateLimitConfig::default(),
            projects: Vec::new(),
            quota: QuotaConfig::default(),
        }
    }
}
