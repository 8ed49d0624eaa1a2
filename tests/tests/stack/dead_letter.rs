//! A record the aggregator cannot fold goes to the dead-letter topic with its reason, and the
//! records around it are folded as usual.

use chrono::{Duration as ChronoDuration, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;
use tally_tests::workload::{batch_body, Workload};
use tally_tests::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_is_dead_lettered_and_folding_goes_on() {
    let env = TestEnv::start().await;
    let producer: FutureProducer = env
        .kafka
        .client_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    for (key, payload) in [
        ("a:poison", "not an envelope".as_bytes()),
        ("a:poison", br#"{"v": 99}"#.as_slice()),
    ] {
        producer
            .send(
                FutureRecord::to(&env.kafka.events_topic)
                    .key(key)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }
    let events = Workload::new(5, Utc::now() - ChronoDuration::minutes(3)).session(0, "acct-1");
    assert_eq!(
        env.post_batch(&env.key_a, &batch_body(&events))
            .await
            .status(),
        200
    );
    let session_id = events[0]["session_id"]
        .as_str()
        .expect("session")
        .to_owned();
    env.poll(
        &env.key_a,
        &format!("/v1/sessions/{session_id}"),
        Duration::from_secs(60),
        |b| b["event_count"] == events.len(),
    )
    .await;

    let found = env.dead_letters(2);
    assert_eq!(
        found.len(),
        2,
        "both poison records reach the dead-letter topic: {found:?}"
    );
    assert_eq!(found[0].0, "not an envelope");
    assert!(
        found[0].1.starts_with("undecodable envelope"),
        "{}",
        found[0].1
    );
    assert_eq!(found[1].1, "unknown envelope version 99");

    let text = env.aggregator_metrics().await;
    assert!(
        text.contains("tally_aggregator_records_total{outcome=\"dead_lettered\"} 2"),
        "{text}"
    );
    tally_tests::env::promtool_check_metrics(&text)
        .expect("promtool accepts the aggregator's metrics");
    env.finish().await;
}
