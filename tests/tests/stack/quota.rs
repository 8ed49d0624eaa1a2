//! Quotas on the real stack: counters folded by the aggregator and followed by ingest,
//! threshold alerts exactly once, replicas that agree, overrides that reach every replica,
//! adjustments, and admin routes kept to the admin key of the project (the view's staleness and
//! account caps: quota_view.rs).

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tally_aggregator::config::AlertsConfig;
use tally_tests::env::Options;
use tally_tests::quota_checks::{check, post, quota, response, wait_used};
use tally_tests::TestEnv;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Every record of the alerts topic.
fn alert_records(env: &TestEnv) -> Vec<Value> {
    let consumer: BaseConsumer = env
        .kafka
        .client_config()
        .set(
            "group.id",
            format!("alerts-reader-{}", uuid::Uuid::new_v4()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let topic = &env.kafka.alerts_topic;
    let (_, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(5))
        .expect("watermarks");
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, 0, Offset::Beginning)
        .expect("partition");
    consumer.assign(&assignment).expect("assign");
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while (records.len() as i64) < high && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            records.push(
                serde_json::from_slice(message.payload().unwrap_or_default()).expect("alert json"),
            );
        }
    }
    records
}

/// A webhook that refuses its first call (to exercise the retry) and keeps the rest.
async fn webhook() -> (String, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/alerts", listener.local_addr().expect("addr"));
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let kept = received.clone();
    tokio::spawn(async move {
        let mut calls = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            calls += 1;
            let mut buffer = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers and the body (Content-Length).
            let body = loop {
                let n = socket.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break None;
                }
                buffer.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buffer).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let length = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if buffer.len() >= end + 4 + length {
                        break Some(buffer[end + 4..end + 4 + length].to_vec());
                    }
                }
            };
            let status = if calls == 1 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            if calls > 1 {
                if let Some(body) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                    kept.lock().expect("lock").push(body);
                }
            }
            let answer =
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = socket.write_all(answer.as_bytes()).await;
        }
    });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn usage_crosses_each_threshold_and_alerts_exactly_once() {
    let (webhook_url, webhook_calls) = webhook().await;
    let env = TestEnv::start_with(Options {
        quota: Some(quota(1000)),
        alerts: Some(AlertsConfig {
            webhook_url,
            evaluate_interval_ms: 100,
            ..AlertsConfig::default()
        }),
        ..Options::default()
    })
    .await;
    let account = "acct-threshold";
    let url = env.url.clone();
    // 700 (70 %: nothing), 800 (warning), 950 (critical), 1050 (exceeded).
    let mut sent = Vec::new();
    for (tokens, used, status) in [
        (700, 700, "ok"),
        (100, 800, "warning"),
        (150, 950, "critical"),
        (100, 1050, "exceeded"),
    ] {
        let event = response(account, tokens);
        post(&env, std::slice::from_ref(&event)).await;
        sent.push(event);
        let answer = wait_used(&env, &url, account, used).await;
        let (_, usage) = env.get(&env.key_a, &format!("/v1/usage/{account}")).await;
        assert_eq!(usage["status"], status, "{usage}");
        assert_eq!(answer["allowed"], used < 1000, "{answer}");
    }
    // A resent batch (same ids) changes nothing.
    post(&env, &sent).await;
    let (_, refused) = check(
        &env,
        &url,
        &env.key_a,
        json!({"account_id": account, "estimated_tokens": 1}),
    )
    .await;
    assert_eq!(refused["reason"], "tokens_per_day_exceeded");
    assert_eq!(refused["status"], "exceeded");

    // Three alerts land in ClickHouse; the topic holds exactly those three.
    let client = env.clickhouse_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let count: u64 = client
            .query("SELECT count() FROM quota_alerts FINAL WHERE account_id = ?")
            .bind(account)
            .fetch_one()
            .await
            .expect("count");
        if count == 3 {
            break;
        }
        assert!(Instant::now() < deadline, "alerts table has {count} rows");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // More evaluation rounds (and a status row per change) must not repeat them.
    post(&env, &[response(account, 5)]).await;
    wait_used(&env, &url, account, 1055).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let alerts = alert_records(&env);
    let mut by_threshold: BTreeMap<String, usize> = BTreeMap::new();
    for alert in &alerts {
        assert_eq!(alert["account_id"], account);
        assert_eq!(alert["limit_name"], "tokens_per_day");
        *by_threshold
            .entry(alert["threshold"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    let expected: BTreeMap<String, usize> = [("critical", 1), ("exceeded", 1), ("warning", 1)]
        .into_iter()
        .map(|(t, n)| (t.to_owned(), n))
        .collect();
    assert_eq!(by_threshold, expected, "{alerts:?}");
    // The webhook got each alert, the first after a retry.
    let deadline = Instant::now() + Duration::from_secs(20);
    while webhook_calls.lock().expect("lock").len() < 3 {
        assert!(
            Instant::now() < deadline,
            "webhook calls: {:?}",
            webhook_calls.lock().expect("lock")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut ids: Vec<String> = webhook_calls
        .lock()
        .expect("lock")
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap_or("").to_owned())
        .collect();
    ids.sort();
    let mut topic_ids: Vec<String> = alerts
        .iter()
        .map(|a| a["alert_id"].as_str().unwrap_or("").to_owned())
        .collect();
    topic_ids.sort();
    assert_eq!(ids, topic_ids);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_answer_alike_and_overrides_reach_both() {
    let env = TestEnv::start_with(Options {
        quota: Some(quota(1000)),
        ingest_replicas: 2,
        ..Options::default()
    })
    .await;
    let account = "acct-replicas";
    post(&env, &[response(account, 300), response(account, 200)]).await;
    let (one, two) = (env.replica_urls[0].clone(), env.replica_urls[1].clone());
    let first = wait_used(&env, &one, account, 500).await;
    let second = wait_used(&env, &two, account, 500).await;
    assert_eq!(first["limits"], second["limits"]);
    assert_eq!(
        (first["allowed"].clone(), first["status"].clone()),
        (second["allowed"].clone(), second["status"].clone())
    );

    // An override set through replica one is what replica two answers with, within seconds.
    let set = env
        .http
        .put(format!("{one}/v1/admin/accounts/{account}"))
        .bearer_auth(&env.admin_key_a)
        .json(&json!({"plan": "pro", "overrides": {"tokens_per_day": 400}}))
        .send()
        .await
        .expect("put");
    assert_eq!(set.status(), 200);
    let set_at = Instant::now();
    loop {
        let (_, answer) = check(&env, &two, &env.key_a, json!({"account_id": account})).await;
        if answer["plan"] == "pro" {
            assert_eq!(answer["allowed"], false, "{answer}");
            assert_eq!(answer["reason"], "tokens_per_day_exceeded");
            break;
        }
        assert!(
            set_at.elapsed() < Duration::from_secs(5),
            "override not seen by replica two"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_routes_belong_to_the_admin_key_of_the_project() {
    let env = TestEnv::start_with(Options {
        without_aggregator: true,
        ..Options::default()
    })
    .await;
    let put = |key: String, account: &str, body: Value| {
        let request = env
            .http
            .put(format!("{}/v1/admin/accounts/{account}", env.url))
            .json(&body);
        async move {
            let request = if key.is_empty() {
                request
            } else {
                request.bearer_auth(key)
            };
            request.send().await.expect("answered").status().as_u16()
        }
    };
    let pro = json!({"plan": "pro"});
    assert_eq!(put(String::new(), "shared", pro.clone()).await, 401);
    assert_eq!(put(env.key_a.clone(), "shared", pro.clone()).await, 403);
    assert_eq!(
        put(env.read_key_a.clone(), "shared", pro.clone()).await,
        403
    );
    assert_eq!(
        put(env.admin_key_b.clone(), "shared", pro.clone()).await,
        200
    );
    // Project b's admin changed b's account "shared", never a's.
    let (status, a_view) = env.get(&env.admin_key_a, "/v1/admin/accounts/shared").await;
    assert_eq!((status, a_view["plan"].as_str()), (200, Some("free")));
    let (_, b_view) = env.get(&env.admin_key_b, "/v1/admin/accounts/shared").await;
    assert_eq!(b_view["plan"], "pro");
    let (status, _) = env.get(&env.key_b, "/v1/admin/accounts/shared").await;
    assert_eq!(status, 403);
    let adjust = env
        .http
        .post(format!("{}/v1/admin/accounts/shared/adjustments", env.url))
        .bearer_auth(&env.key_a)
        .json(&json!({"tokens": -5, "reason": "x"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(adjust.status(), 403);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn adjustments_and_usage_come_back_through_the_usage_route() {
    let env = TestEnv::start_with(Options {
        quota: Some(quota(10_000)),
        ..Options::default()
    })
    .await;
    let account = "acct-usage";
    let mut email = response(account, 200);
    email["model"] = json!("claude-3-5-haiku-20241022");
    email["provider"] = json!("anthropic");
    email["operation"] = json!("email_draft");
    post(&env, &[response(account, 500), email]).await;
    let adjust = env
        .http
        .post(format!(
            "{}/v1/admin/accounts/{account}/adjustments",
            env.url
        ))
        .bearer_auth(&env.admin_key_a)
        .json(&json!({"tokens": -100, "cost_usd": -0.5, "reason": "goodwill credit"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(adjust.status(), 200);
    wait_used(&env, &env.url, account, 600).await;
    let usage = env
        .poll(
            &env.key_a,
            &format!("/v1/usage/{account}"),
            Duration::from_secs(20),
            |u| {
                u["daily"]
                    .as_array()
                    .and_then(|d| d.last())
                    .map(|d| d["tokens"] == 600)
                    .unwrap_or(false)
            },
        )
        .await;
    assert_eq!(usage["windows"]["day"]["tokens"], 600);
    let models: BTreeMap<String, Value> = usage["breakdown"]["by_model"]
        .as_array()
        .expect("by_model")
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap_or("").to_owned(),
                m["tokens"].clone(),
            )
        })
        .collect();
    assert_eq!(models["gpt-4o-mini"], 500);
    assert_eq!(models["claude-3-5-haiku-20241022"], 200);
    let operations: Vec<&str> = usage["breakdown"]["by_operation"]
        .as_array()
        .expect("by_operation")
        .iter()
        .filter_map(|o| o["operation"].as_str())
        .collect();
    assert!(
        operations.contains(&"email_draft") && operations.contains(&"chat"),
        "{operations:?}"
    );
    assert_eq!(usage["daily"].as_array().map(Vec::len), Some(30));
    assert_eq!(usage["trend"]["direction"], "stable");
    // Read keys only; another project's read key sees an empty account.
    let (status, _) = env
        .get(&env.admin_key_a, &format!("/v1/usage/{account}"))
        .await;
    assert_eq!(status, 403);
    let (_, other) = env.get(&env.key_b, &format!("/v1/usage/{account}")).await;
    assert_eq!(other["windows"]["day"]["tokens"], 0);
    env.finish().await;
}
