//! ClickHouse goes away for a minute while events keep coming: the aggregator stops
//! committing, retries with backoff, reports not-ready and its failures in metrics, and once
//! ClickHouse is back it catches up with every total exact.

use std::time::{Duration, Instant};
use tally_tests::private_stack::{free_port, PrivatePart};
use tally_tests::processes::{terminate, FoldStage};
use tally_tests::replay::Replay;

const DOWNTIME: Duration = Duration::from_secs(60);

async fn status(http: &reqwest::Client, url: &str) -> Option<u16> {
    http.get(url).send().await.ok().map(|r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clickhouse_down_then_back_loses_nothing() {
    let clickhouse = PrivatePart::clickhouse();
    clickhouse.start();
    let stage =
        FoldStage::with_clickhouse(3, &format!("http://127.0.0.1:{}", clickhouse.port())).await;
    let replay = Replay::generate(5, "outage", 600, 4);
    let health = format!("127.0.0.1:{}", free_port());
    let mut aggregator = stage.spawn_listening("outage", Some("outage-0"), &health);
    let http = reqwest::Client::new();

    let third = replay.records.len() / 3;
    stage
        .produce(&replay.records[..third], 300, Duration::from_millis(50))
        .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    clickhouse.stop();
    let down_since = Instant::now();
    stage
        .produce(&replay.records[third..], 300, Duration::from_millis(50))
        .await;
    let mut saw_not_ready = false;
    while down_since.elapsed() < DOWNTIME {
        saw_not_ready |= status(&http, &format!("http://{health}/readyz")).await == Some(503);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        saw_not_ready,
        "/readyz kept answering ready while ClickHouse was down"
    );
    let metrics = http
        .get(format!("http://{health}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let failures = metrics
        .lines()
        .find(|l| l.starts_with("tally_aggregator_write_failures_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failures >= 2.0, "retries are counted: {failures}");
    assert!(
        aggregator.try_wait().expect("status").is_none(),
        "the aggregator survives the outage"
    );

    clickhouse.start();
    let reading = stage
        .wait_for("outage", &replay.truth, Duration::from_secs(120))
        .await;
    assert_eq!(
        status(&http, &format!("http://{health}/readyz")).await,
        Some(200)
    );
    terminate(&mut aggregator);
    let logs = stage.logs();
    assert_eq!(
        reading, replay.truth,
        "totals after the outage differ from the ground truth\n{logs}"
    );
    stage.remove().await;
}
