//! Guarantee 2 under fire: the aggregator is killed with SIGKILL at random moments while it
//! folds a workload with resends, out-of-order and late events; once a survivor has caught
//! up, every total equals the ground truth exactly.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tally_tests::processes::{terminate, FoldStage};
use tally_tests::replay::Replay;

const KILLS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_folding_changes_no_total() {
    let seed = 20_261_122;
    let replay = Replay::generate(seed, "crash", 1500, 7);
    assert!(
        replay.records.len() as u64 > replay.truth.unique_events,
        "the workload resends events"
    );
    let stage = FoldStage::new(3).await;

    let producing = {
        let stage_records = replay.records.clone();
        let stage_ref = &stage;
        async move {
            stage_ref
                .produce(&stage_records, 400, Duration::from_millis(150))
                .await
        }
    };
    let killing = async {
        let mut rng = StdRng::seed_from_u64(seed);
        for kill in 0..KILLS {
            let mut child = stage.spawn("crash", Some("crash-0"));
            tokio::time::sleep(Duration::from_millis(rng.random_range(700..2_500))).await;
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
            eprintln!("kill {} of {KILLS}", kill + 1);
        }
    };
    tokio::join!(producing, killing);

    let mut survivor = stage.spawn("crash", Some("crash-0"));
    let reading = stage
        .wait_for("crash", &replay.truth, Duration::from_secs(180))
        .await;
    terminate(&mut survivor);
    let logs = stage.logs();
    assert_eq!(
        reading, replay.truth,
        "hourly rollups differ from the ground truth\n{logs}"
    );
    let daily = stage.read("crash", "usage_daily").await;
    assert_eq!(
        daily, replay.truth,
        "daily rollups differ from the ground truth"
    );
    let session_events = stage.session_events("crash").await;
    assert_eq!(
        session_events, replay.truth.unique_events,
        "session rollups count each event once"
    );
    stage.remove().await;
}
