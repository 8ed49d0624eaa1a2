//! Partitions added to the event topic while Tally runs: ingest keeps spreading records over
//! `events_partitions`, so the sessions that go on afterwards stay in their partition and every
//! session rollup stays exact.
//!
//! Needs the local stack (`make test` starts it).

use chrono::{Duration as ChronoDuration, Utc};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use std::time::{Duration, Instant};
use tally_tests::workload::{batch_body, Workload};
use tally_tests::TestEnv;

const SESSIONS: usize = 24;

async fn post(env: &TestEnv, workload: &mut Workload) -> usize {
    let events: Vec<_> = (0..SESSIONS)
        .flat_map(|i| workload.session(i, &format!("acct-{}", i % 3)))
        .collect();
    let response = env.post_batch(&env.key_a, &batch_body(&events)).await;
    assert_eq!(response.status(), 200);
    events.len()
}

/// Waits until the raw store and the session rollups both hold `total` events.
async fn wait_folded(env: &TestEnv, total: usize) {
    let client = env.clickhouse_client();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (stored, folded): (u64, u64) = client
            .query(
                "SELECT (SELECT count() FROM events FINAL WHERE project_id = ?), \
                 (SELECT sum(event_count) FROM sessions FINAL WHERE project_id = ?)",
            )
            .bind("a")
            .bind("a")
            .fetch_one()
            .await
            .expect("query");
        if (stored, folded) == (total as u64, total as u64) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{stored} events stored and {folded} folded of {total}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_added_later_never_split_a_session() {
    let env = TestEnv::start().await;
    // Every round sends more events to the same sessions (same indexes, same run).
    let mut workload = Workload::new(23, Utc::now() - ChronoDuration::minutes(30));
    let mut total = post(&env, &mut workload).await;
    wait_folded(&env, total).await;

    let admin: AdminClient<DefaultClientContext> =
        env.kafka.client_config().create().expect("admin");
    let results = admin
        .create_partitions(
            &[NewPartitions::new(&env.kafka.events_topic, 9)],
            &AdminOptions::new(),
        )
        .await
        .expect("create partitions");
    assert!(results.iter().all(Result::is_ok), "{results:?}");

    // Ingest reads the topic's metadata every two seconds: keep posting over several reads.
    for round in 0..4 {
        workload.set_start(Utc::now() - ChronoDuration::minutes(20 - round));
        total += post(&env, &mut workload).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    wait_folded(&env, total).await;

    let split: Vec<(String, u64)> = env
        .clickhouse_client()
        .query(
            "SELECT session_id, uniqExact(kafka_partition) AS partitions FROM events FINAL \
             WHERE project_id = ? GROUP BY session_id HAVING partitions > 1",
        )
        .bind("a")
        .fetch_all()
        .await
        .expect("query");
    assert!(
        split.is_empty(),
        "sessions split over partitions: {split:?}"
    );
    let used: u64 = env
        .clickhouse_client()
        .query("SELECT toInt64(max(kafka_partition)) + 1 FROM events WHERE project_id = ?")
        .bind("a")
        .fetch_one::<i64>()
        .await
        .expect("query")
        .try_into()
        .unwrap_or(0);
    assert!(used <= 3, "records went to an added partition ({used})");
    env.finish().await;
}
