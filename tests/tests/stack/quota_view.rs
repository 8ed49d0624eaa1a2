//! The quota view on the real stack beyond the counters: a view that loses Kafka fails open or
//! closed as configured and recovers, and a project at its account cap keeps its accounts and
//! says which are untracked.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tally_tests::env::Options;
use tally_tests::private_stack::PrivatePart;
use tally_tests::quota_checks::{check, day_used, post, quota, response, wait_used};
use tally_tests::TestEnv;

async fn stale_answer(env: &TestEnv) -> Value {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, answer) = check(
            env,
            &env.url,
            &env.key_a,
            json!({"account_id": "acct-stale"}),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        if answer["stale"] == true {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "the view never went stale: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stale_view_fails_open_or_closed_as_configured() {
    let kafka = PrivatePart::kafka();
    kafka.start();
    let options = |fail_open| {
        let mut config = quota(1000);
        config.fail_open = fail_open;
        config.stale_after_secs = 2;
        Options {
            brokers: Some(format!("127.0.0.1:{}", kafka.port())),
            quota: Some(config),
            without_aggregator: true,
            ..Options::default()
        }
    };
    let open = TestEnv::start_with(options(true)).await;
    let closed = TestEnv::start_with(options(false)).await;
    for env in [&open, &closed] {
        let (_, answer) = check(
            env,
            &env.url,
            &env.key_a,
            json!({"account_id": "acct-stale"}),
        )
        .await;
        assert_eq!(
            (answer["allowed"].clone(), answer["stale"].clone()),
            (json!(true), json!(false)),
            "{answer}"
        );
    }
    kafka.stop();
    let answer = stale_answer(&open).await;
    assert_eq!(answer["allowed"], true, "{answer}");
    let answer = stale_answer(&closed).await;
    assert_eq!(
        (answer["allowed"].clone(), answer["reason"].clone()),
        (json!(false), json!("quota_view_stale")),
        "{answer}"
    );
    let metrics = open
        .http
        .get(format!("{}/metrics", open.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let staleness: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tally_ingest_quota_view_staleness_seconds "))
        .and_then(|v| v.trim().parse().ok())
        .expect("staleness gauge");
    assert!(staleness > 2.0, "{staleness}");
    kafka.start();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, answer) = check(
            &closed,
            &closed.url,
            &closed.key_a,
            json!({"account_id": "acct-stale"}),
        )
        .await;
        if answer["stale"] == false {
            assert_eq!(answer["allowed"], true);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the view did not recover: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    open.finish().await;
    closed.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_at_its_account_cap_keeps_its_accounts_and_says_which_are_untracked() {
    let mut config = quota(1000);
    config.fail_open = false;
    config.accounts.per_project = 2;
    let env = TestEnv::start_with(Options {
        quota: Some(config),
        ..Options::default()
    })
    .await;
    post(&env, &[response("cap-a", 10), response("cap-b", 20)]).await;
    wait_used(&env, &env.url, "cap-a", 10).await;
    wait_used(&env, &env.url, "cap-b", 20).await;
    post(&env, &[response("cap-c", 30), response("cap-a", 1)]).await;
    // cap-a's later usage still counts; cap-c's usage folds into the rollups but gets no
    // counters, and the check says so (refused here: this deployment fails closed).
    let answer = wait_used(&env, &env.url, "cap-a", 11).await;
    assert_eq!(answer["tracked"], json!(true), "{answer}");
    env.poll(
        &env.key_a,
        "/v1/metrics/summary",
        Duration::from_secs(30),
        |s| s["llm_responses"] == json!(4),
    )
    .await;
    let (status, answer) = check(&env, &env.url, &env.key_a, json!({"account_id": "cap-c"})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            answer["allowed"].clone(),
            answer["reason"].clone(),
            answer["tracked"].clone(),
            day_used(&answer)
        ),
        (
            json!(false),
            json!("quota_account_cap"),
            json!(false),
            Some(0)
        ),
        "{answer}"
    );
    let (_, usage) = env.get(&env.key_a, "/v1/usage/cap-c").await;
    assert_eq!(usage["tracked"], json!(false), "{usage}");
    let metrics = env.aggregator_metrics().await;
    assert!(
        metrics.contains("tally_aggregator_quota_refused_accounts_total 1"),
        "{metrics}"
    );
    env.finish().await;
}
