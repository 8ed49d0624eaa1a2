//! Kafka stops: ingest answers 503 with Retry-After and stays healthy; Kafka comes back:
//! ingest recovers, and every event that got a 200 is in ClickHouse exactly once.
//!
//! The test runs its own broker (the project's start script, with a private folder and
//! ports), so stopping it leaves the shared stack alone.

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tally_tests::env::Options;
use tally_tests::private_stack::PrivatePart;
use tally_tests::workload::{batch_body, Workload};
use tally_tests::TestEnv;

fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event_id"].as_str().expect("id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_down_means_503_then_recovery_without_loss() {
    let kafka = PrivatePart::kafka();
    kafka.start();
    let env = TestEnv::start_with(Options {
        brokers: Some(format!("127.0.0.1:{}", kafka.port())),
        delivery_timeout_ms: Some(3000),
        ..Options::default()
    })
    .await;
    let mut workload = Workload::new(99, Utc::now() - ChronoDuration::minutes(20));
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();

    let before = workload.sessions(3, 2);
    assert_eq!(
        env.post_batch(&env.key_a, &batch_body(&before))
            .await
            .status(),
        200
    );
    acknowledged.extend(ids(&before));

    kafka.stop();
    let during = workload.sessions(3, 2);
    let response = env.post_batch(&env.key_a, &batch_body(&during)).await;
    assert_eq!(response.status(), 503);
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry_after >= 1);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"]["code"], "unavailable");

    // Still answering health checks, and telling load balancers it is not ready.
    let healthz = env
        .http
        .get(format!("{}/healthz", env.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(healthz.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = env
            .http
            .get(format!("{}/readyz", env.url))
            .send()
            .await
            .expect("answered");
        if ready.status() == 503 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz kept saying ready with Kafka down"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    kafka.start();
    // Like an SDK: resend the refused batch (same ids) until it is accepted, then go on.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = env
            .post_batch(&env.key_a, &batch_body(&during))
            .await
            .status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 while Kafka recovers");
        assert!(
            Instant::now() < deadline,
            "ingest did not recover after Kafka came back"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    acknowledged.extend(ids(&during));
    let after = workload.sessions(2, 2);
    assert_eq!(
        env.post_batch(&env.key_a, &batch_body(&after))
            .await
            .status(),
        200
    );
    acknowledged.extend(ids(&after));

    // Every acknowledged event reaches ClickHouse, once.
    let client = env.clickhouse_client();
    let wanted: Vec<String> = acknowledged.iter().cloned().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stored: Vec<String> = client
            .query("SELECT event_id FROM events FINAL WHERE project_id = ? AND has(?, event_id)")
            .bind("a")
            .bind(&wanted)
            .fetch_all()
            .await
            .expect("query");
        let stored_set: BTreeSet<String> = stored.iter().cloned().collect();
        assert_eq!(stored.len(), stored_set.len(), "an event is stored twice");
        if stored_set == acknowledged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} acknowledged events missing from ClickHouse",
            acknowledged.len() - stored_set.len(),
            acknowledged.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The aggregator writes raw events before session rollups: wait for the rollups too.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let folded: u64 = client
            .query("SELECT sum(event_count) FROM sessions FINAL WHERE project_id = ?")
            .bind("a")
            .fetch_one()
            .await
            .expect("query");
        assert!(
            folded <= acknowledged.len() as u64,
            "session rollups count an event twice"
        );
        if folded == acknowledged.len() as u64 || Instant::now() >= deadline {
            assert_eq!(
                folded,
                acknowledged.len() as u64,
                "session rollups count each event once"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    env.finish().await;
}
