//! A private Tally for one test or one suite, on the local stack's Kafka and ClickHouse: its
//! own topics, database, consumer group and keys ([`Private`], which the in-process
//! [`crate::TestEnv`] and the aggregator processes of [`crate::processes`] use too), and, in
//! [`DevStack`], the real `tally-ingest` and `tally-aggregator` binaries on free ports.
//!
//! The `tally-devstack` binary wraps [`DevStack`] for the Python and TypeScript suites: it
//! prints the stack as one JSON line, takes commands on stdin and removes everything it made
//! when stdin closes or it is told to stop. Its manual is in `tests/src/bin/devstack.rs`.

pub mod service;
pub mod spec;

use crate::env::{clickhouse_url, kafka_brokers};
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::{json, Value};
use service::Service;
use sha2::{Digest, Sha256};
use spec::{deep_merge, Spec};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_runtime::kafka::KafkaConfig;

/// The names a private stack owns: topics, database and consumer group, all carrying one
/// random name so nothing is shared with another test or left ambiguous at cleanup.
#[derive(Debug, Clone)]
pub struct Private {
    pub name: String,
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub group_id: String,
}

impl Private {
    /// Fresh names on the local stack (`TALLY_TEST_KAFKA`, `TALLY_TEST_CLICKHOUSE`).
    pub fn new(partitions: i32) -> Self {
        Self::on(&kafka_brokers(), &clickhouse_url(), partitions)
    }

    /// Fresh names on the given Kafka and ClickHouse.
    pub fn on(brokers: &str, clickhouse_url: &str, partitions: i32) -> Self {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let kafka = KafkaConfig {
            brokers: brokers.to_owned(),
            events_topic: format!("tally.test.{name}"),
            dead_letter_topic: format!("tally.test.{name}.dlq"),
            quota_topic: format!("tally.test.{name}.quota"),
            alerts_topic: format!("tally.test.{name}.alerts"),
            events_partitions: partitions,
            replication_factor: 1,
        };
        let clickhouse = ClickHouseConfig {
            url: clickhouse_url.trim_end_matches('/').to_owned(),
            database: format!("tally_test_{name}"),
            ..ClickHouseConfig::default()
        };
        Self {
            group_id: format!("tally-test-{name}"),
            name,
            kafka,
            clickhouse,
        }
    }

    /// Deletes the topics and the consumer group and drops the database; what does not
    /// exist is skipped and errors are ignored, so a failed test's cleanup cannot mask it.
    pub async fn remove(&self) {
        remove(
            std::slice::from_ref(&self.kafka),
            &self.group_id,
            &self.clickhouse,
        )
        .await;
    }
}

/// Deletes every topic the configs name and the consumer group, and drops the database.
async fn remove(kafkas: &[KafkaConfig], group_id: &str, clickhouse: &ClickHouseConfig) {
    if let Some(first) = kafkas.first() {
        if let Ok(admin) = first
            .client_config()
            .create::<AdminClient<DefaultClientContext>>()
        {
            let mut topics: Vec<&str> = kafkas
                .iter()
                .flat_map(|k| {
                    [
                        k.events_topic.as_str(),
                        k.dead_letter_topic.as_str(),
                        k.quota_topic.as_str(),
                        k.alerts_topic.as_str(),
                    ]
                })
                .collect();
            topics.sort_unstable();
            topics.dedup();
            let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
            let _ = admin.delete_topics(&topics, &options).await;
            let _ = admin.delete_groups(&[group_id], &options).await;
        }
    }
    let _ = clickhouse
        .server_client()
        .query(&format!("DROP DATABASE IF EXISTS {}", clickhouse.database))
        .execute()
        .await;
}

/// The scopes a dev-stack project has a key for; `all` is a key holding every scope.
const SCOPES: [&str; 3] = ["ingest", "read", "admin"];

/// A random key and the hex SHA-256 the config stores.
pub fn random_key(label: &str) -> (String, String) {
    let key = format!("tally_test_{label}_{}", uuid::Uuid::new_v4().simple());
    let sha256 = hex::encode(Sha256::digest(key.as_bytes()));
    (key, sha256)
}

/// A configured project: one plain key per scope and `all`.
struct Project {
    id: String,
    keys: BTreeMap<String, String>,
    config: Value,
}

fn project(spec: &spec::ProjectSpec) -> Project {
    let mut keys = BTreeMap::new();
    let mut entries = Vec::new();
    for scope in SCOPES {
        let (key, sha256) = random_key(scope);
        keys.insert(scope.to_string(), key);
        entries.push(json!({"sha256": sha256, "scopes": [scope]}));
    }
    let (key, sha256) = random_key("all");
    keys.insert("all".into(), key);
    entries.push(json!({"sha256": sha256, "scopes": SCOPES}));
    let mut config = json!({"id": spec.id(), "keys": entries});
    if let Some(redact) = spec.redact() {
        config["redact"] = redact.clone();
    }
    Project {
        id: spec.id().to_owned(),
        keys,
        config,
    }
}

/// Which service a command names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    Ingest,
    Aggregator,
}

/// A running private Tally of real service processes.
pub struct DevStack {
    spec: Spec,
    pub private: Private,
    projects: Vec<Project>,
    /// The kafka section of each service as it reads it (overlays included).
    kafkas: Vec<KafkaConfig>,
    clickhouse: ClickHouseConfig,
    pub dir: PathBuf,
    own_dir: bool,
    ingest: Service,
    aggregator: Option<Service>,
    /// What `tally-ingest --print-config` says on the same files: the settings in effect.
    ingest_settings: Value,
    /// A service failed at some point: its logs are kept.
    failed: bool,
}

impl DevStack {
    /// Creates the topics and (through the aggregator or a migration) the schema, then starts
    /// the aggregator and ingest and waits until both are ready. On failure everything made
    /// so far is removed, except the logs the error points to.
    pub async fn start(spec: Spec) -> anyhow::Result<Self> {
        let private = Private::on(
            &spec.brokers.clone().unwrap_or_else(kafka_brokers),
            &spec.clickhouse.clone().unwrap_or_else(clickhouse_url),
            spec.partitions,
        );
        let (dir, own_dir) = match &spec.log_dir {
            Some(dir) => (dir.clone(), false),
            None => (
                std::env::temp_dir().join(format!("tally-devstack-{}", private.name)),
                true,
            ),
        };
        std::fs::create_dir_all(&dir)?;
        let projects: Vec<Project> = spec.projects.iter().map(project).collect();

        let kafka = serde_json::to_value(&private.kafka)?;
        let clickhouse =
            json!({"url": private.clickhouse.url, "database": private.clickhouse.database});
        let mut ingest_config = json!({
            "workers": 2,
            "shutdown_timeout_secs": 5,
            "kafka": kafka,
            "clickhouse": clickhouse,
            "projects": projects.iter().map(|p| p.config.clone()).collect::<Vec<_>>(),
        });
        let mut aggregator_config = json!({
            "group_id": private.group_id,
            "batch_max_wait_ms": 50,
            "max_retry_backoff_ms": 1000,
            "create_topic": true,
            "kafka": kafka,
            "clickhouse": clickhouse,
        });
        for (config, own) in [
            (&mut ingest_config, &spec.ingest_config),
            (&mut aggregator_config, &spec.aggregator_config),
        ] {
            deep_merge(config, &spec.config);
            deep_merge(config, own);
        }
        let section = |config: &Value, name: &str| config.get(name).cloned().unwrap_or(Value::Null);
        let kafkas: Vec<KafkaConfig> = [&ingest_config, &aggregator_config]
            .iter()
            .map(|c| serde_json::from_value(section(c, "kafka")))
            .collect::<Result<_, _>>()?;
        let clickhouse: ClickHouseConfig =
            serde_json::from_value(section(&aggregator_config, "clickhouse"))?;

        let ingest = Service::new(
            "tally-ingest",
            &[],
            ingest_config,
            &spec.config_files,
            &spec.env,
            &dir,
        );
        let aggregator = spec.aggregator.then(|| {
            Service::new(
                "tally-aggregator",
                &["run"],
                aggregator_config,
                &spec.config_files,
                &spec.env,
                &dir,
            )
        });
        let mut stack = Self {
            spec,
            private,
            projects,
            kafkas,
            clickhouse,
            dir,
            own_dir,
            ingest,
            aggregator,
            ingest_settings: Value::Null,
            failed: false,
        };
        if let Err(err) = stack.boot().await {
            stack.failed = true;
            stack.stop().await;
            return Err(err);
        }
        Ok(stack)
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        for kafka in &self.kafkas {
            kafka.ensure_topics().await?;
        }
        if self.aggregator.is_none() && self.spec.migrate {
            tally_runtime::migrate::run(&self.clickhouse).await?;
        }
        // The aggregator applies the schema, so it goes first.
        if self.aggregator.is_some() {
            self.start_service(Which::Aggregator).await?;
        }
        self.start_service(Which::Ingest).await?;
        self.ingest_settings = self.print_ingest_config()?;
        Ok(())
    }

    fn service(&mut self, which: Which) -> anyhow::Result<&mut Service> {
        match which {
            Which::Ingest => Ok(&mut self.ingest),
            Which::Aggregator => self
                .aggregator
                .as_mut()
                .ok_or_else(|| anyhow::anyhow!("this stack runs no aggregator")),
        }
    }

    /// Starts a service (again, on the same port) and waits until it is ready.
    pub async fn start_service(&mut self, which: Which) -> anyhow::Result<()> {
        let timeout = Duration::from_secs_f64(self.spec.ready_timeout_secs);
        let result = self.service(which)?.start(timeout).await;
        self.failed |= result.is_err();
        result
    }

    /// SIGTERM, then SIGKILL after the spec's grace period.
    pub async fn stop_service(&mut self, which: Which) -> anyhow::Result<()> {
        let grace = Duration::from_secs_f64(self.spec.stop_timeout_secs);
        let clean = self.service(which)?.stop(grace).await;
        self.failed |= !clean;
        Ok(())
    }

    /// SIGKILL.
    pub fn kill_service(&mut self, which: Which) -> anyhow::Result<()> {
        self.service(which)?.kill();
        Ok(())
    }

    fn print_ingest_config(&self) -> anyhow::Result<Value> {
        let output = self.ingest.command().arg("--print-config").output()?;
        anyhow::ensure!(
            output.status.success(),
            "tally-ingest --print-config failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// The stack as the suites read it.
    pub fn describe(&self) -> Value {
        let mut topics = BTreeMap::new();
        for kafka in &self.kafkas {
            topics.insert("events_topic", kafka.events_topic.clone());
            topics.insert("dead_letter_topic", kafka.dead_letter_topic.clone());
            topics.insert("quota_topic", kafka.quota_topic.clone());
            topics.insert("alerts_topic", kafka.alerts_topic.clone());
        }
        let projects: BTreeMap<&str, Value> = self
            .projects
            .iter()
            .map(|p| (p.id.as_str(), json!({"keys": p.keys})))
            .collect();
        json!({
            "ingest_url": self.ingest.url(),
            "aggregator_url": self.aggregator.as_ref().map(Service::url),
            "brokers": self.kafkas[0].brokers,
            "clickhouse": self.clickhouse.url,
            "database": self.clickhouse.database,
            "group_id": self.private.group_id,
            "partitions": self.kafkas[0].events_partitions,
            "topics": topics,
            "projects": projects,
            "ingest_config": self.ingest_settings,
            "log_dir": self.dir,
        })
    }

    /// Ends both services, deletes the topics and the consumer group, drops the database and
    /// removes the log folder it made (kept when a service failed). True when nothing failed.
    pub async fn stop(&mut self) -> bool {
        let grace = Duration::from_secs_f64(self.spec.stop_timeout_secs);
        self.failed |= !self.ingest.stop(grace).await;
        if let Some(aggregator) = &mut self.aggregator {
            self.failed |= !aggregator.stop(grace).await;
        }
        remove(&self.kafkas, &self.private.group_id, &self.clickhouse).await;
        if self.own_dir && !self.failed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        !self.failed
    }
}
