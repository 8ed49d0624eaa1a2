//! Two aggregators in one consumer group split the partitions; one stops mid-way and the
//! other takes its partitions over. Every total still equals the ground truth exactly.

use std::time::Duration;
use tally_tests::processes::{terminate, FoldStage};
use tally_tests::replay::Replay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_leaving_mid_way_changes_no_total() {
    let replay = Replay::generate(77, "rebalance", 800, 5);
    let stage = FoldStage::new(4).await;
    let mut first = stage.spawn("first", None);
    let mut second = stage.spawn("second", None);

    let half = replay.records.len() / 2;
    stage
        .produce(&replay.records[..half], 300, Duration::from_millis(100))
        .await;
    // Let both replicas fold part of it, then stop one while records keep coming.
    tokio::time::sleep(Duration::from_secs(2)).await;
    terminate(&mut first);
    stage
        .produce(&replay.records[half..], 300, Duration::from_millis(100))
        .await;

    let reading = stage
        .wait_for("rebalance", &replay.truth, Duration::from_secs(120))
        .await;
    terminate(&mut second);
    let logs = stage.logs();
    assert_eq!(
        reading, replay.truth,
        "rollups differ from the ground truth\n{logs}"
    );
    let session_events = stage.session_events("rebalance").await;
    assert_eq!(session_events, replay.truth.unique_events);
    stage.remove().await;
}
