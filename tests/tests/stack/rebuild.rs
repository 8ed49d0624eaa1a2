//! `tally-aggregator rebuild` recomputes every rollup of a range from the raw events — here
//! re-pricing a workload first folded with wrong prices — while live folding goes on, and
//! every total ends equal to the ground truth: nothing lost, nothing counted twice.

use chrono::{Duration as ChronoDuration, Utc};
use std::time::Duration;
use tally_tests::processes::{terminate, FoldStage};
use tally_tests::replay::Replay;

const WRONG_PRICES: &str =
    "model,provider,effective_from,input,output,cache_read,cache_write,source
gpt-4o,openai,2026-01-01,100,100,,,test
claude-sonnet-4-5,anthropic,2026-01-01,100,100,,,test
gemini-2.5-flash,google,2026-01-01,100,100,,,test
mistral-large,mistral,2026-01-01,100,100,,,test
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_reprices_history_while_folding_goes_on() {
    let replay = Replay::generate(9, "rebuild", 400, 4);
    let mut stage = FoldStage::new(3).await;
    let prices = stage.log_dir.join("wrong-prices.csv");
    std::fs::write(&prices, WRONG_PRICES).expect("prices file");

    // Fold most of the workload with wrong prices.
    stage.extra_env = vec![("TALLY_PRICES_FILE".into(), prices.display().to_string())];
    let mut wrong = stage.spawn("wrong", Some("rebuild-0"));
    let split = replay.records.len() * 7 / 10;
    stage
        .produce(&replay.records[..split], 500, Duration::ZERO)
        .await;
    let expected_raw = replay.records[..split]
        .iter()
        .map(|e| &e.event.event_id)
        .collect::<std::collections::HashSet<_>>()
        .len() as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let folded = loop {
        let reading = stage.read("rebuild", "usage_hourly").await;
        if reading.unique_events == expected_raw {
            break reading;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first fold did not finish"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    terminate(&mut wrong);
    let wrong_cost: i64 = folded.by_account_model.values().map(|t| t.cost_nanos).sum();
    let true_cost: i64 = replay
        .truth
        .by_account_model
        .values()
        .map(|t| t.cost_nanos)
        .sum();
    assert!(
        wrong_cost > true_cost,
        "the first fold used the wrong prices"
    );

    // The right prices, a rebuild of the whole range, and the rest of the workload meanwhile.
    stage.extra_env.clear();
    let mut right = stage.spawn("right", Some("rebuild-0"));
    let from = (Utc::now() - ChronoDuration::days(5))
        .format("%Y-%m-%d")
        .to_string();
    let to = (Utc::now() + ChronoDuration::days(1))
        .format("%Y-%m-%d")
        .to_string();
    let rest = &replay.records[split..];
    let (first, second) = rest.split_at(rest.len() / 2);
    stage.produce(first, 200, Duration::from_millis(20)).await;
    let output = stage.run_command(&["rebuild", "--from", &from, "--to", &to]);
    assert!(
        output.status.success(),
        "rebuild: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("on 3 partitions"));
    stage.produce(second, 200, Duration::from_millis(20)).await;

    let reading = stage
        .wait_for("rebuild", &replay.truth, Duration::from_secs(120))
        .await;
    terminate(&mut right);
    let logs = stage.logs();
    assert_eq!(
        reading, replay.truth,
        "totals after the rebuild differ from the ground truth\n{logs}"
    );
    assert_eq!(stage.read("rebuild", "usage_daily").await, replay.truth);
    let session_events = stage.session_events("rebuild").await;
    assert_eq!(session_events, replay.truth.unique_events);
    stage.remove().await;
}
