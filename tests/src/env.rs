//! One isolated Tally for one test: ingest and the aggregator in-process, on their own Kafka
//! topic and ClickHouse database, with fresh keys. `finish` stops them and drops both.

use serde_json::Value;
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tally_aggregator::config::AggregatorConfig;
use tally_ingest::auth::{KeyConfig, ProjectConfig, Redaction, Scope};
use tally_ingest::config::IngestConfig;
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_runtime::kafka::KafkaConfig;

/// The local stack's addresses; `TALLY_TEST_KAFKA` and `TALLY_TEST_CLICKHOUSE` override them.
pub fn kafka_brokers() -> String {
    std::env::var("TALLY_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

pub fn clickhouse_url() -> String {
    std::env::var("TALLY_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into())
}

/// A random API key and its config entry.
pub fn new_key(scopes: &[Scope]) -> (String, KeyConfig) {
    let key = format!("tally_test_{}", uuid::Uuid::new_v4().simple());
    let sha256 = hex::encode(Sha256::digest(key.as_bytes()));
    (
        key,
        KeyConfig {
            sha256,
            scopes: scopes.to_vec(),
        },
    )
}

pub struct TestEnv {
    pub url: String,
    pub aggregator_url: String,
    pub kafka: KafkaConfig,
    pub clickhouse: ClickHouseConfig,
    /// Project `a`: a key that may ingest and read, a read-only key and an ingest-only key.
    pub key_a: String,
    pub read_key_a: String,
    pub ingest_key_a: String,
    /// Project `a`'s admin key.
    pub admin_key_a: String,
    /// Project `b`: a key that may ingest and read, and its admin key.
    pub key_b: String,
    pub admin_key_b: String,
    /// Every ingest replica's URL; `url` is the first.
    pub replica_urls: Vec<String>,
    pub http: reqwest::Client,
    private: crate::devstack::Private,
    ingest: Option<tally_ingest::Running>,
    more_ingests: Vec<tally_ingest::Running>,
    aggregator: Option<tally_aggregator::Running>,
}

/// Knobs a test may turn before the services start.
#[derive(Default)]
pub struct Options {
    pub brokers: Option<String>,
    pub delivery_timeout_ms: Option<u64>,
    pub max_body_bytes: Option<usize>,
    pub max_batch_events: Option<usize>,
    pub without_aggregator: bool,
    /// Redaction of project `b`.
    pub redact_b: Redaction,
    pub rate_limit: Option<tally_ingest::ratelimit::RateLimitConfig>,
    /// Plans and limits of both services.
    pub quota: Option<tally_quota::QuotaConfig>,
    pub alerts: Option<tally_aggregator::config::AlertsConfig>,
    /// Ingest replicas (one when 0); `replica_urls` lists them.
    pub ingest_replicas: usize,
}

impl TestEnv {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        tally_runtime::logging::init_for_tests("warn");
        let mut private = crate::devstack::Private::new(3);
        if let Some(brokers) = &options.brokers {
            private.kafka.brokers = brokers.clone();
        }
        let (kafka, clickhouse) = (private.kafka.clone(), private.clickhouse.clone());
        let (key_a, key_a_config) = new_key(&[Scope::Ingest, Scope::Read]);
        let (read_key_a, read_key_a_config) = new_key(&[Scope::Read]);
        let (ingest_key_a, ingest_key_a_config) = new_key(&[Scope::Ingest]);
        let (key_b, key_b_config) = new_key(&[Scope::Ingest, Scope::Read]);
        let (admin_key_a, admin_key_a_config) = new_key(&[Scope::Admin]);
        let (admin_key_b, admin_key_b_config) = new_key(&[Scope::Admin]);

        let mut ingest_config = IngestConfig {
            listen: "127.0.0.1:0".into(),
            workers: 2,
            kafka: kafka.clone(),
            clickhouse: clickhouse.clone(),
            projects: vec![
                ProjectConfig {
                    id: "a".into(),
                    keys: vec![
                        key_a_config,
                        read_key_a_config,
                        ingest_key_a_config,
                        admin_key_a_config,
                    ],
                    redact: Redaction::default(),
                },
                ProjectConfig {
                    id: "b".into(),
                    keys: vec![key_b_config, admin_key_b_config],
                    redact: options.redact_b,
                },
            ],
            shutdown_timeout_secs: 5,
            ..IngestConfig::default()
        };
        if let Some(ms) = options.delivery_timeout_ms {
            ingest_config.producer.delivery_timeout_ms = ms;
            ingest_config.producer.retry_after_secs = 1;
        }
        if let Some(rate_limit) = options.rate_limit.clone() {
            ingest_config.rate_limit = rate_limit;
        }
        if let Some(bytes) = options.max_body_bytes {
            ingest_config.max_body_bytes = bytes;
        }
        if let Some(events) = options.max_batch_events {
            ingest_config.limits.max_batch_events = events;
        }
        if let Some(quota) = options.quota.clone() {
            ingest_config.quota = quota;
        }

        // The aggregator creates the topic and the schema, so it starts first.
        let aggregator_config = AggregatorConfig {
            listen: "127.0.0.1:0".into(),
            group_id: private.group_id.clone(),
            batch_max_wait_ms: 50,
            max_retry_backoff_ms: 1000,
            kafka: kafka.clone(),
            clickhouse: clickhouse.clone(),
            quota: ingest_config.quota.clone(),
            alerts: options.alerts.clone().unwrap_or_default(),
            ..AggregatorConfig::default()
        };
        let (aggregator, aggregator_url) = if options.without_aggregator {
            tally_runtime::migrate::run(&clickhouse)
                .await
                .expect("migrations apply");
            kafka.ensure_topics().await.expect("topic is created");
            (None, String::new())
        } else {
            let running = tally_aggregator::start(aggregator_config)
                .await
                .expect("aggregator starts");
            let url = format!("http://{}", running.addr);
            (Some(running), url)
        };

        let mut replicas = Vec::new();
        for _ in 0..options.ingest_replicas.max(1) {
            let (ingest, server) =
                tally_ingest::build(ingest_config.clone()).expect("ingest starts");
            tokio::spawn(server);
            replicas.push(ingest);
        }
        let replica_urls: Vec<String> = replicas
            .iter()
            .map(|r| format!("http://{}", r.addr))
            .collect();
        let url = replica_urls[0].clone();
        let ingest = replicas.remove(0);

        let env = Self {
            url,
            aggregator_url,
            kafka,
            clickhouse,
            key_a,
            read_key_a,
            ingest_key_a,
            key_b,
            admin_key_a,
            admin_key_b,
            replica_urls,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            private,
            ingest: Some(ingest),
            more_ingests: replicas,
            aggregator,
        };
        env.wait_until_ready().await;
        env
    }

    async fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut ready = true;
            for url in &self.replica_urls {
                ready &= self
                    .http
                    .get(format!("{url}/readyz"))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
            }
            if ready {
                return;
            }
            assert!(Instant::now() < deadline, "ingest did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `POST /v1/batch` with `key` and a JSON body.
    pub async fn post_batch(&self, key: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/batch", self.url))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request is answered")
    }

    /// The aggregator's Prometheus exposition.
    pub async fn aggregator_metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.aggregator_url))
            .send()
            .await
            .expect("metrics answered")
            .text()
            .await
            .expect("metrics text")
    }

    /// The records on the dead-letter topic as `(payload, tally-reason)`, once `count` are
    /// there or 90 s passed.
    pub fn dead_letters(&self, count: usize) -> Vec<(String, String)> {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        use rdkafka::message::{Headers, Message};
        let consumer: BaseConsumer = self
            .kafka
            .client_config()
            .set("group.id", format!("dlq-reader-{}", uuid::Uuid::new_v4()))
            .set("auto.offset.reset", "earliest")
            .create()
            .expect("consumer");
        consumer
            .subscribe(&[&self.kafka.dead_letter_topic])
            .expect("subscribe");
        let text = |bytes: Option<&[u8]>| {
            bytes
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let mut found = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(90);
        while found.len() < count && Instant::now() < deadline {
            if let Some(Ok(message)) = consumer.poll(Duration::from_millis(500)) {
                let reason = message
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "tally-reason")?.value);
                found.push((text(message.payload()), text(reason)));
            }
        }
        found
    }

    /// `GET` a path with `key`; returns the status and the JSON body.
    pub async fn get(&self, key: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(key)
            .send()
            .await
            .expect("request is answered");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Polls `GET path` until `done` holds for the body, or panics after `timeout`.
    pub async fn poll(
        &self,
        key: &str,
        path: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.get(key, path).await;
            if status == 200 && done(&body) {
                return body;
            }
            assert!(
                Instant::now() < deadline,
                "{path} did not reach the expected state; last answer {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// A ClickHouse client on this test's database.
    pub fn clickhouse_client(&self) -> clickhouse::Client {
        self.clickhouse.client()
    }

    /// Stops the services, then deletes the topics and drops the database.
    pub async fn finish(mut self) {
        if let Some(ingest) = self.ingest.take() {
            ingest.handle.stop(true).await;
        }
        for ingest in self.more_ingests.drain(..) {
            ingest.handle.stop(true).await;
        }
        if let Some(aggregator) = self.aggregator.take() {
            aggregator.stop().await.expect("aggregator stops cleanly");
        }
        self.private.remove().await;
    }
}

impl Drop for TestEnv {
    /// A test that failed before `finish` still leaves no topic or database behind.
    fn drop(&mut self) {
        if self.ingest.is_none() && self.aggregator.is_none() {
            return;
        }
        for ingest in self.more_ingests.drain(..) {
            drop(ingest.handle.stop(false));
        }
        if let Some(ingest) = self.ingest.take() {
            drop(ingest.handle.stop(false));
        }
        let private = self.private.clone();
        let cleanup = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(private.remove());
            }
        });
        let _ = cleanup.join();
    }
}

/// Runs `promtool check metrics` on a Prometheus text exposition; returns its complaints.
pub fn promtool_check_metrics(exposition: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|err| {
            format!("cannot run promtool (deploy/local/stack.sh install provides it): {err}")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(exposition.as_bytes())
            .map_err(|err| err.to_string())?;
    }
    let output = child.wait_with_output().map_err(|err| err.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
