//! Real `tally-aggregator` processes for the crash and rebalance tests, and the checks of
//! their totals against a [`crate::replay::GroundTruth`].

use crate::env::{clickhouse_url, kafka_brokers};
use crate::replay::{GroundTruth, Totals};
use clickhouse::Row;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_runtime::kafka::KafkaConfig;
use tally_schema::envelope::Envelope;
use tally_schema::queries::params;
use tally_schema::rollups::Granularity;

/// A command running the service `name` (`tally-ingest`, `tally-aggregator`) built beside this
/// test or tool. The harness's own `TALLY_TEST_*` variables are removed: the services read
/// every `TALLY_` variable as a setting and refuse ones they do not know.
pub fn service_command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("TALLY_TEST_") {
            command.env_remove(var);
        }
    }
    command
}

/// A binary of the workspace, built beside this test or tool.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // Tests live in target/<profile>/deps/, binaries (and the bench tools) in target/<profile>/.
    let dir = exe.parent().expect("executable dir");
    let candidates = [dir.join(name), dir.parent().unwrap_or(dir).join(name)];
    let found = candidates.iter().find(|p| p.exists()).cloned();
    found.unwrap_or_else(|| {
        panic!(
            "{} is missing: run `cargo build --workspace` first (make test does)",
            candidates[1].display()
        )
    })
}

/// A process's memory (`VmRSS`, or `VmHWM` for its peak) in KiB, from `/proc`.
pub fn memory_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no {field} for {pid}"))
}

/// The aggregator's time by batch phase (`load=2.70s fold=2.13s …`), from its `/metrics`.
pub fn phase_times(metrics: &str) -> String {
    metrics
        .lines()
        .filter(|l| l.starts_with("tally_aggregator_batch_phase_duration_seconds_sum"))
        .filter_map(|l| {
            let phase = l.split('"').nth(1)?;
            let secs: f64 = l.split_whitespace().last()?.parse().ok()?;
            Some(format!("{phase}={secs:.2}s"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A rollup's totals per account and model (`queries::USAGE_TOTALS_*`).
#[derive(Debug, Row, Deserialize)]
struct UsageTotals {
    account_id: String,
    model: String,
    events: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    cost_nanos: i64,
    provided_cost_nanos: i64,
}

/// A topic and a database of one test, and the settings aggregator processes get.
pub struct FoldStage {
    /// Its topics, database and consumer group.
    pub private: crate::devstack::Private,
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    pub log_dir: PathBuf,
    /// Batch size of the aggregators it starts (small, so tests cross many commit points).
    pub batch_max_events: usize,
    /// More environment for the aggregators it starts (`TALLY_PRICES_FILE`, …).
    pub extra_env: Vec<(String, String)>,
}

impl FoldStage {
    pub async fn new(partitions: i32) -> Self {
        Self::with_clickhouse(partitions, &clickhouse_url()).await
    }

    /// A stage whose database lives on the ClickHouse server at `clickhouse_url`.
    pub async fn with_clickhouse(partitions: i32, clickhouse_url: &str) -> Self {
        let private = crate::devstack::Private::on(&kafka_brokers(), clickhouse_url, partitions);
        let (kafka, clickhouse) = (private.kafka.clone(), private.clickhouse.clone());
        kafka.ensure_topics().await.expect("topic");
        tally_runtime::migrate::run(&clickhouse)
            .await
            .expect("migrations");
        let log_dir = std::env::temp_dir().join(format!("tally-fold-{}", private.name));
        std::fs::create_dir_all(&log_dir).expect("log dir");
        Self {
            private,
            kafka,
            clickhouse,
            log_dir,
            batch_max_events: 250,
            extra_env: Vec::new(),
        }
    }

    /// Starts an aggregator process; `instance` names its static membership (or `None`).
    pub fn spawn(&self, label: &str, instance: Option<&str>) -> Child {
        self.spawn_listening(label, instance, "127.0.0.1:0")
    }

    /// As [`FoldStage::spawn`], with the health server on `listen`.
    pub fn spawn_listening(&self, label: &str, instance: Option<&str>, listen: &str) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_dir.join(format!("{label}.log")))
            .expect("log file");
        let mut command = service_command("tally-aggregator");
        command
            .env("TALLY_LISTEN", listen)
            .env("TALLY_GROUP_ID", &self.private.group_id)
            .env("TALLY_INSTANCE_ID", instance.unwrap_or(""))
            .env("TALLY_SESSION_TIMEOUT_MS", "6000")
            .env("TALLY_BATCH_MAX_EVENTS", self.batch_max_events.to_string())
            .env("TALLY_BATCH_MAX_WAIT_MS", "50")
            .env("TALLY_MAX_RETRY_BACKOFF_MS", "500")
            .env("TALLY_KAFKA__BROKERS", &self.kafka.brokers)
            .env("TALLY_KAFKA__EVENTS_TOPIC", &self.kafka.events_topic)
            .env(
                "TALLY_KAFKA__DEAD_LETTER_TOPIC",
                &self.kafka.dead_letter_topic,
            )
            .env("TALLY_KAFKA__QUOTA_TOPIC", &self.kafka.quota_topic)
            .env("TALLY_KAFKA__ALERTS_TOPIC", &self.kafka.alerts_topic)
            .env("TALLY_CLICKHOUSE__URL", &self.clickhouse.url)
            .env("TALLY_CLICKHOUSE__DATABASE", &self.clickhouse.database)
            .env("RUST_LOG", "warn")
            .envs(self.extra_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log);
        command.spawn().expect("aggregator starts")
    }

    /// Runs `tally-aggregator <args>` against this stage's topic and database to completion.
    pub fn run_command(&self, args: &[&str]) -> std::process::Output {
        service_command("tally-aggregator")
            .args(args)
            .env("TALLY_KAFKA__BROKERS", &self.kafka.brokers)
            .env("TALLY_KAFKA__EVENTS_TOPIC", &self.kafka.events_topic)
            .env("TALLY_CLICKHOUSE__URL", &self.clickhouse.url)
            .env("TALLY_CLICKHOUSE__DATABASE", &self.clickhouse.database)
            .env("RUST_LOG", "warn")
            .output()
            .expect("tally-aggregator runs")
    }

    /// Publishes envelopes as ingest would (key `project:session`, acks=all), in chunks,
    /// pausing `pause` between chunks so folding and killing overlap with production.
    pub async fn produce(&self, records: &[Envelope], chunk: usize, pause: Duration) {
        let producer: FutureProducer = self
            .kafka
            .client_config()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()
            .expect("producer");
        for part in records.chunks(chunk) {
            let encoded: Vec<(String, Vec<u8>)> =
                part.iter().map(|e| (e.key(), e.encode())).collect();
            let deliveries: Vec<_> = encoded
                .iter()
                .map(|(key, payload)| {
                    let record = FutureRecord::to(&self.kafka.events_topic)
                        .key(key)
                        .payload(payload);
                    producer
                        .send_result(record)
                        .map_err(|(err, _)| err)
                        .expect("the producer queue has room")
                })
                .collect();
            for delivery in futures::future::join_all(deliveries).await {
                delivery
                    .expect("delivered")
                    .map_err(|(err, _)| err)
                    .expect("Kafka acknowledges");
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Waits until the rollups equal `truth` (or `timeout` passes) and returns the last reading.
    pub async fn wait_for(
        &self,
        project_id: &str,
        truth: &GroundTruth,
        timeout: Duration,
    ) -> GroundTruth {
        let deadline = Instant::now() + timeout;
        loop {
            let reading = self.read(project_id, "usage_hourly").await;
            if &reading == truth || Instant::now() > deadline {
                return reading;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// What the tables hold, in the shape of the ground truth; `usage_table` picks the rollup.
    pub async fn read(&self, project_id: &str, usage_table: &str) -> GroundTruth {
        let client = self.clickhouse.client();
        let granularity = match usage_table {
            "usage_daily" => Granularity::Day,
            _ => Granularity::Hour,
        };
        let totals = params::UsageTotals {
            granularity,
            project_id,
        };
        let rows: Vec<UsageTotals> = params::prepare(&client, totals)
            .fetch_all()
            .await
            .unwrap_or_default();
        let by_account_model: BTreeMap<(String, String), Totals> = rows
            .into_iter()
            .map(|r| {
                let totals = Totals {
                    events: r.events,
                    input_tokens: r.input_tokens,
                    output_tokens: r.output_tokens,
                    cache_read_tokens: r.cache_read_tokens,
                    cache_write_tokens: r.cache_write_tokens,
                    cost_nanos: r.cost_nanos,
                    provided_cost_nanos: r.provided_cost_nanos,
                };
                ((r.account_id, r.model), totals)
            })
            .collect();
        let count = |sql: &'static str| {
            let client = client.clone();
            async move {
                client
                    .query(sql)
                    .bind(project_id)
                    .fetch_one::<u64>()
                    .await
                    .unwrap_or(0)
            }
        };
        GroundTruth {
            by_account_model,
            unique_events: count("SELECT count() FROM events FINAL WHERE project_id = ?").await,
            sessions: count("SELECT count() FROM sessions FINAL WHERE project_id = ?").await,
            tool_calls: count(
                "SELECT sum(calls) FROM tool_usage_hourly FINAL WHERE project_id = ?",
            )
            .await,
            tool_results: count(
                "SELECT sum(results) FROM tool_usage_hourly FINAL WHERE project_id = ?",
            )
            .await,
        }
    }

    /// Sum of every session's event count.
    pub async fn session_events(&self, project_id: &str) -> u64 {
        self.clickhouse
            .client()
            .query("SELECT sum(event_count) FROM sessions FINAL WHERE project_id = ?")
            .bind(project_id)
            .fetch_one()
            .await
            .expect("session sums")
    }

    /// The last lines of every process log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.log_dir) {
            for entry in entries.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", entry.path().display()));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Deletes the topics and the database.
    pub async fn remove(self) {
        self.private.remove().await;
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// A child process killed when dropped, so a failing test leaves nothing running.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops a process with SIGTERM and waits for it.
pub fn terminate(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

#[cfg(test)]
mod columns {
    use super::*;
    use tally_schema::queries::{self as q, assert_columns};

    #[test]
    fn rows_read_the_columns_their_queries_return() {
        assert_columns::<UsageTotals>(&q::USAGE_TOTALS_HOURLY);
        assert_columns::<UsageTotals>(&q::USAGE_TOTALS_DAILY);
    }
}
