//! `tally-devstack`, the harness the Python and TypeScript suites start Tally with: it prints a
//! working stack, obeys its commands, and leaves no topic, database or log folder behind.

use chrono::{SecondsFormat, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use tally_runtime::clickhouse::ClickHouseConfig;
use tally_runtime::kafka::KafkaConfig;
use tally_tests::processes::{binary, KillOnDrop};

struct Devstack {
    child: KillOnDrop,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Devstack {
    fn start(spec: Value) -> (Self, Value) {
        let mut child: Child = Command::new(binary("tally-devstack"))
            .args(["--spec", &spec.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("tally-devstack starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut devstack = Self {
            child: KillOnDrop(child),
            stdin,
            stdout,
        };
        let described = devstack.answer();
        (devstack, described)
    }

    fn answer(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read");
        serde_json::from_str(&line).unwrap_or_else(|err| panic!("{err}: {line:?}"))
    }

    fn command(&mut self, command: &str) -> Value {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}").expect("write");
        stdin.flush().expect("flush");
        self.answer()
    }

    /// Closes stdin and waits for the exit status.
    fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Some(status) = self.child.0.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "tally-devstack did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn batch(session: &str, n: usize) -> Value {
    let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
    let events: Vec<Value> = (0..n)
        .map(|_| {
            json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": "custom",
                   "timestamp": now, "session_id": session, "account_id": "acct"})
        })
        .collect();
    json!({ "batch": events })
}

async fn post(http: &reqwest::Client, url: &str, key: &str, body: &Value) -> u16 {
    http.post(format!("{url}/v1/batch"))
        .bearer_auth(key)
        .json(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn session_events(http: &reqwest::Client, url: &str, key: &str, session: &str) -> u64 {
    let answer = http
        .get(format!("{url}/v1/sessions/{session}"))
        .bearer_auth(key)
        .send()
        .await;
    match answer {
        Ok(answer) if answer.status().is_success() => {
            let body: Value = answer.json().await.unwrap_or_default();
            body["event_count"].as_u64().unwrap_or(0)
        }
        _ => 0,
    }
}

fn text(value: &Value) -> String {
    value.as_str().expect("a string").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devstack_runs_a_private_tally_obeys_commands_and_cleans_up() {
    let (mut devstack, described) =
        Devstack::start(json!({"projects": ["dev-a", "dev-b"], "partitions": 2}));
    assert!(described.get("error").is_none(), "{described}");
    let url = text(&described["ingest_url"]);
    let key = text(&described["projects"]["dev-a"]["keys"]["all"]);
    let read_only_b = text(&described["projects"]["dev-b"]["keys"]["read"]);
    assert_ne!(key, read_only_b);
    let database = text(&described["database"]);
    let events_topic = text(&described["topics"]["events_topic"]);
    let log_dir = std::path::PathBuf::from(text(&described["log_dir"]));
    assert!(log_dir.join("tally-ingest.log").exists());
    assert_eq!(described["partitions"], 2);
    assert_eq!(
        described["ingest_config"]["clickhouse"]["database"], described["database"],
        "ingest runs on the private database"
    );

    // Events go through the real write path and are folded by the real aggregator.
    let http = reqwest::Client::new();
    assert_eq!(post(&http, &url, &key, &batch("dev-s1", 5)).await, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    while session_events(&http, &url, &key, "dev-s1").await < 5 {
        assert!(Instant::now() < deadline, "the batch was not folded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A key of the other project does not read this one's sessions.
    assert_eq!(session_events(&http, &url, &read_only_b, "dev-s1").await, 0);

    // kill: nothing answers; start: the same URL answers again.
    assert_eq!(devstack.command("kill ingest"), json!({"ok": true}));
    assert_eq!(
        post(&http, &url, &key, &batch("dev-s2", 1)).await,
        0,
        "a killed ingest answered"
    );
    assert_eq!(devstack.command("start ingest"), json!({"ok": true}));
    assert_eq!(post(&http, &url, &key, &batch("dev-s2", 1)).await, 200);

    let refused = devstack.command("restart everything");
    assert_eq!(refused["ok"], false);
    assert!(
        text(&refused["error"]).contains("unknown command"),
        "{refused}"
    );
    assert_eq!(devstack.command("describe")["database"], database);

    // End of input: a clean exit, and nothing of the stack left.
    assert!(
        devstack.close().success(),
        "tally-devstack exited uncleanly"
    );
    let clickhouse = ClickHouseConfig {
        url: tally_tests::env::clickhouse_url(),
        ..ClickHouseConfig::default()
    };
    let left: u64 = clickhouse
        .server_client()
        .query("SELECT count() FROM system.databases WHERE name = ?")
        .bind(&database)
        .fetch_one()
        .await
        .expect("query");
    assert_eq!(left, 0, "database {database} is left");
    assert!(
        !log_dir.exists(),
        "log folder {} is left",
        log_dir.display()
    );
    let consumer: BaseConsumer = KafkaConfig::default()
        .client_config()
        .set("bootstrap.servers", tally_tests::env::kafka_brokers())
        .create()
        .expect("consumer");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .expect("metadata");
        if !metadata.topics().iter().any(|t| t.name() == events_topic) {
            break;
        }
        assert!(Instant::now() < deadline, "topic {events_topic} is left");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[test]
fn devstack_refuses_an_unknown_spec_field_by_name() {
    let (devstack, described) = Devstack::start(json!({"agregator": false}));
    let error = text(&described["error"]);
    assert!(error.contains("agregator"), "{error}");
    assert!(!devstack.close().success());
}
