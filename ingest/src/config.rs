//! ingest's configuration: `tally-ingest --config FILE`, then `TALLY_…` overrides
//! (`TALLY_LISTEN=127.0.0.1:8080`, `TALLY_KAFKA__BROKERS=…`, `TALLY_LIMITS__MAX_BATCH_EVENTS=…`).

use crate::auth::ProjectConfig;
use crate::ratelimit::RateLimitConfig;
use crate::write::sink::ProducerConfig;
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
    /// The route families this process serves (default: all four). A read replica apart
    /// from the write path runs `["read"]`; `/readyz` asks only the families served.
    pub roles: Vec<Role>,
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
            roles: Role::ALL.to_vec(),
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

/// A family of routes, with the state and readiness it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// `POST /v1/batch`: ready when Kafka is reachable.
    Write,
    /// Sessions, timelines, metrics and `GET /v1/usage/{account_id}`: reads ClickHouse and the
    /// quota view; ready once the view has read the quota topic.
    Read,
    /// `POST /v1/quota/check`: reads the quota view; ready once it has read the topic.
    Quota,
    /// Account plans, overrides and usage adjustments: publishes to the quota and events
    /// topics; ready once the view has read the quota topic and Kafka is reachable.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Write, Role::Read, Role::Quota, Role::Admin];
    /// The roles that need the quota view (and so follow `tally.quota.v1`).
    pub const VIEW_READERS: [Role; 3] = [Role::Read, Role::Quota, Role::Admin];
}

impl IngestConfig {
    /// Whether a role served reads the quota view (and so the process follows the topic).
    pub fn follows_quota_view(&self) -> bool {
        Role::VIEW_READERS.iter().any(|r| self.roles.contains(r))
    }

    /// Checks what serde cannot: at least one role.
    pub fn validate(&self) -> Result<(), String> {
        if self.roles.is_empty() {
            return Err("roles: name at least one of write, read, quota, admin".into());
        }
        self.quota.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `deploy/local/ingest.toml` and the `quota.toml` both services read.
    fn shipped() -> Vec<std::path::PathBuf> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local");
        vec![root.join("ingest.toml"), root.join("quota.toml")]
    }

    #[test]
    fn the_shipped_config_reads() {
        let config: IngestConfig = tally_runtime::config::load(&shipped()).expect("reads");
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.roles, Role::ALL);
    }

    #[test]
    fn the_shipped_config_shows_every_field() {
        let defaults = serde_json::to_value(IngestConfig::default()).expect("json");
        let missing = tally_runtime::config::undocumented(&defaults, &shipped(), &["quota.plans"])
            .expect("files read");
        assert!(
            missing.is_empty(),
            "fields of IngestConfig missing from deploy/local/ingest.toml or quota.toml \
             (add them there, with a comment saying what they do): {missing:?}"
        );
    }
}
