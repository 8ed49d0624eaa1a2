//! Hostile input on the real stack (Kafka, ClickHouse, ingest and the aggregator): what an
//! ordinary client can send must never stop folding, lose an acknowledged event, dodge a
//! limit or wrap a number. Hostile traffic goes first, then a seeded good workload; at the
//! end the metrics summary over every accepted event (hostile and good) must equal the ground
//! truth computed here, and the aggregator must have stayed ready throughout.
//!
//! Needs the local stack (`make test` starts it).

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, SecondsFormat, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tally_quota::{PlanLimits, QuotaConfig};
use tally_schema::envelope::Envelope;
use tally_schema::event::{Event, Tool};
use tally_tests::env::Options;
use tally_tests::read_truth::{Span, Truth};
use tally_tests::workload::{batch_body, Workload};
use tally_tests::TestEnv;

const WAIT: Duration = Duration::from_secs(90);

fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn event(kind: &str, session: &str, account: &str, at: DateTime<Utc>) -> Value {
    json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "timestamp": rfc3339(at),
           "session_id": session, "account_id": account})
}

fn response(session: &str, account: &str, at: DateTime<Utc>, input_tokens: u64) -> Value {
    let mut e = event("llm_response", session, account, at);
    e["model"] = json!("gpt-4o-mini");
    e["provider"] = json!("openai");
    e["operation"] = json!("chat");
    e["usage"] = json!({"input_tokens": input_tokens, "output_tokens": 0, "cache_read_tokens": 0, "cache_write_tokens": 0});
    e
}

/// `[[[…1…]]]`, `depth` arrays deep.
fn nested(depth: usize) -> Value {
    serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth))).expect("JSON")
}

/// Posts a batch; returns the events ingest accepted (the rest must have been rejected with
/// the expected `(index, code, field)`).
async fn post(env: &TestEnv, events: &[Value], rejected: &[(usize, &str, &str)]) -> Vec<Value> {
    let response = env.post_batch(&env.key_a, &batch_body(events)).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("JSON answer");
    let got: Vec<(usize, String, String)> = body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index") as usize,
                r["code"].as_str().unwrap_or_default().to_owned(),
                r["field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want: Vec<(usize, String, String)> = rejected
        .iter()
        .map(|(i, c, f)| (*i, (*c).to_owned(), (*f).to_owned()))
        .collect();
    assert_eq!(got, want, "{body}");
    assert_eq!(body["accepted"], json!(events.len() - rejected.len()));
    events
        .iter()
        .enumerate()
        .filter(|(i, _)| !rejected.iter().any(|r| r.0 == *i))
        .map(|(_, e)| e.clone())
        .collect()
}

async fn assert_ready(env: &TestEnv, when: &str) {
    let status = env
        .http
        .get(format!("{}/readyz", env.aggregator_url))
        .send()
        .await
        .expect("readyz answered")
        .status();
    assert_eq!(status, 200, "the aggregator is ready {when}");
}

async fn quota_day_used(env: &TestEnv, account: &str) -> Option<u64> {
    let answer: Value = env
        .http
        .post(format!("{}/v1/quota/check", env.url))
        .bearer_auth(&env.key_a)
        .json(&json!({"account_id": account}))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    answer["limits"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == "tokens_per_day")?["used"]
        .as_u64()
}

async fn wait_day_used(env: &TestEnv, account: &str, used: u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let now = quota_day_used(env, account).await;
        if now == Some(used) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tokens_per_day used never reached {used}; last {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_never_stops_folding_loses_events_or_dodges_limits() {
    let mut quota = QuotaConfig::default();
    for plan in quota.plans.values_mut() {
        plan.limits = PlanLimits {
            tokens_per_day: Some(1_000_000_000_000_000),
            ..PlanLimits::default()
        };
    }
    let env = TestEnv::start_with(Options {
        quota: Some(quota),
        ..Options::default()
    })
    .await;
    let now = Utc::now();
    let mut accepted: Vec<Value> = Vec::new();

    // 1. A batch of 1,000 events whose session ids are 124 emoji each: the aggregator's
    //    session lookups must stay small enough for ClickHouse.
    let emoji = "\u{1F525}".repeat(124);
    let sessions: Vec<Value> = (0..1000)
        .map(|i| {
            event(
                "custom",
                &format!("{emoji}{i:04}"),
                "acct-emoji",
                now - ChronoDuration::minutes(30),
            )
        })
        .collect();
    accepted.extend(post(&env, &sessions, &[]).await);

    // 2. Content: nested up to the limit is accepted and folded with its tokens; deeper is
    //    refused at ingest naming the field, and the good events beside it are kept.
    let deep_ok = {
        let mut e = response(
            "deep",
            "acct-deep",
            now - ChronoDuration::minutes(20),
            200_000,
        );
        e["content"] = nested(32);
        e
    };
    let too_deep = {
        let mut e = response(
            "deep",
            "acct-deep",
            now - ChronoDuration::minutes(20),
            300_000,
        );
        e["content"] = nested(126);
        e
    };
    let beside = response("deep", "acct-deep", now - ChronoDuration::minutes(19), 7);
    accepted.extend(
        post(
            &env,
            &[deep_ok.clone(), too_deep, beside],
            &[(1, "too_deep", "content")],
        )
        .await,
    );

    // 3. Numbers at and past their documented maxima.
    let at = now - ChronoDuration::minutes(10);
    let mut max_tokens = response("numbers", "acct-numbers", at, 1_000_000_000_000);
    max_tokens["duration_ms"] = json!(1_000_000_000);
    let over_tokens = response("numbers", "acct-numbers", at, 1_000_000_000_001);
    let mut over_duration = response("numbers", "acct-numbers", at, 1);
    over_duration["duration_ms"] = json!(1_000_000_001);
    let mut over_cost = response("numbers", "acct-numbers", at, 1);
    over_cost["cost_usd"] = json!(1e7);
    let mut huge_number = response("numbers", "acct-numbers", at, 1);
    huge_number["attributes"] = json!({"n": 1});
    let huge_number = serde_json::to_string(&huge_number)
        .expect("JSON")
        .replace("\"n\":1", "\"n\":1e400");
    let body = serde_json::to_string(&batch_body(&[
        max_tokens.clone(),
        over_tokens,
        over_duration,
        over_cost,
    ]))
    .expect("JSON")
    .replace("]", &format!(",{huge_number}]"));
    let answer: Value = env
        .http
        .post(format!("{}/v1/batch", env.url))
        .bearer_auth(&env.key_a)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("answered")
        .json()
        .await
        .expect("JSON");
    let fields: Vec<(&str, &str)> = answer["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["code"].as_str().unwrap_or(""),
                r["field"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        fields,
        vec![
            ("invalid_value", "usage.input_tokens"),
            ("invalid_value", "duration_ms"),
            ("invalid_value", "cost_usd"),
            ("invalid_value", "attributes"),
        ],
        "{answer}"
    );
    assert_eq!(answer["accepted"], json!(1));
    accepted.push(max_tokens);

    // 4. A record that decodes but that ClickHouse refuses (a tool name far over ingest's
    //    limits, produced straight to Kafka: the lookup of its tool row is larger than any
    //    query ClickHouse takes) is isolated and dead-lettered; the records around it fold.
    let mut refused: Event =
        serde_json::from_value(event("tool_call", "x", "acct-x", now)).expect("event");
    refused.tool = Some(Tool {
        name: "r".repeat(300 * 1024),
        call_id: None,
    });
    let envelope = Envelope::new("a", now.timestamp_millis(), refused);
    let producer: FutureProducer = env
        .kafka
        .client_config()
        .set("acks", "all")
        .create()
        .expect("producer");
    for partition in 0..3 {
        producer
            .send(
                FutureRecord::to(&env.kafka.events_topic)
                    .partition(partition)
                    .key("a:refused")
                    .payload(&envelope.encode()),
                Duration::from_secs(10),
            )
            .await
            .expect("produced");
    }
    let around: Vec<Value> = (0..30)
        .map(|i| {
            response(
                &format!("around-{i}"),
                "acct-around",
                now - ChronoDuration::minutes(5),
                10,
            )
        })
        .collect();
    accepted.extend(post(&env, &around, &[]).await);
    let reasons: Vec<String> = env.dead_letters(3).into_iter().map(|(_, r)| r).collect();
    assert_eq!(
        reasons.len(),
        3,
        "one refused record per partition: {reasons:?}"
    );
    for reason in &reasons {
        assert!(reason.contains("clickhouse refused it"), "{reason}");
    }
    assert_ready(&env, "after a record ClickHouse refused").await;

    // 5. Quota windows move with the clock: an event dated into tomorrow counts tomorrow,
    //    never resets today, and today's later usage still counts.
    let account = "acct-clock";
    let first = response("clock-1", account, now - ChronoDuration::seconds(5), 1000);
    accepted.extend(post(&env, std::slice::from_ref(&first), &[]).await);
    wait_day_used(&env, account, 1000).await;
    let tomorrow =
        now.duration_trunc(ChronoDuration::days(1)).expect("day") + ChronoDuration::days(1);
    let ahead_at = (tomorrow + ChronoDuration::minutes(1)).min(now + ChronoDuration::hours(23));
    let ahead = response("clock-ahead", account, ahead_at, 5000);
    accepted.extend(post(&env, std::slice::from_ref(&ahead), &[]).await);
    env.poll(&env.key_a, "/v1/sessions/clock-ahead", WAIT, |s| {
        s["event_count"] == json!(1)
    })
    .await;
    let later = response("clock-2", account, Utc::now(), 500);
    accepted.extend(post(&env, std::slice::from_ref(&later), &[]).await);
    env.poll(&env.key_a, "/v1/sessions/clock-2", WAIT, |s| {
        s["event_count"] == json!(1)
    })
    .await;
    let expected = if ahead_at < tomorrow { 6500 } else { 1500 };
    wait_day_used(&env, account, expected).await;
    assert_ready(&env, "after the hostile traffic").await;

    // 6. Reads stay bounded: a session of 40 events of about 250 KB pages by bytes, and a
    //    sessions page of 500 long ids is read in bounded lookups.
    let big: Vec<Value> = (0..40)
        .map(|i| {
            let mut e = event(
                "custom",
                "big-content",
                "acct-big",
                now - ChronoDuration::minutes(8) + ChronoDuration::seconds(i),
            );
            e["content"] = json!("c".repeat(250_000));
            e
        })
        .collect();
    for chunk in big.chunks(10) {
        accepted.extend(post(&env, chunk, &[]).await);
    }
    env.poll(&env.key_a, "/v1/sessions/big-content", WAIT, |s| {
        s["event_count"] == json!(40)
    })
    .await;
    let (mut seen, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/sessions/big-content/timeline?cursor={c}"),
            None => "/v1/sessions/big-content/timeline".to_owned(),
        };
        let (status, page) = env.get(&env.key_a, &path).await;
        assert_eq!(status, 200, "{path}");
        let events = page["events"].as_array().expect("events");
        let bytes: usize = events
            .iter()
            .map(|e| e["content"].as_str().map_or(0, str::len))
            .sum();
        assert!(
            bytes <= 8 * 1024 * 1024 + 256 * 1024,
            "a page of {bytes} bytes"
        );
        seen.extend(events.iter().map(|e| e["event_id"].clone()));
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 2, "40 events of 250 KB take more than one page");
    let sent: Vec<Value> = big.iter().map(|e| e["event_id"].clone()).collect();
    assert_eq!(seen, sent, "every event once, in order");
    let (_, lean) = env
        .get(
            &env.key_a,
            "/v1/sessions/big-content/timeline?content=false&limit=5",
        )
        .await;
    let lean_events = lean["events"].as_array().expect("events");
    assert_eq!(lean_events.len(), 5);
    assert!(
        lean_events.iter().all(|e| e.get("content").is_none()),
        "{lean}"
    );
    let (status, list) = env
        .get(
            &env.key_a,
            &format!(
                "/v1/sessions?from={}&limit=500",
                rfc3339(now - ChronoDuration::hours(1)).replace(':', "%3A")
            ),
        )
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(500));

    // 7. A session that names 10,000 distinct models: every event folds, the session lists
    //    the first 64 and says it was cut, and the by-model breakdown is cut with a flag.
    let many: Vec<Value> = (0..10_000)
        .map(|i| {
            let mut e = response(
                "many-models",
                "acct-models",
                now - ChronoDuration::minutes(7),
                1,
            );
            e["model"] = json!(format!("house-model-{i:05}"));
            e
        })
        .collect();
    for chunk in many.chunks(1000) {
        accepted.extend(post(&env, chunk, &[]).await);
    }
    let session = env
        .poll(&env.key_a, "/v1/sessions/many-models", WAIT, |s| {
            s["event_count"] == json!(10_000)
        })
        .await;
    let models = session["models"].as_array().expect("models");
    assert_eq!(models.len(), 64, "{session}");
    assert_eq!(models[0], json!("house-model-00000"));
    assert_eq!(session["models_truncated"], json!(true));
    assert_eq!(session["unpriced_events"], json!(10_000));
    let (status, breakdown) = env
        .get(
            &env.key_a,
            &format!(
                "/v1/metrics/cost?from={}&account_id=acct-models",
                rfc3339(now - ChronoDuration::hours(1)).replace(':', "%3A")
            ),
        )
        .await;
    assert_eq!(status, 200, "{breakdown}");
    assert_eq!(breakdown["by_model"].as_array().map(Vec::len), Some(100));
    assert!(
        breakdown["truncated"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("by_model"))),
        "{breakdown}"
    );

    // The good workload after it all.
    let mut workload = Workload::new(11, now - ChronoDuration::hours(2));
    let good = workload.sessions(40, 4);
    for chunk in good.chunks(200) {
        accepted.extend(post(&env, chunk, &[]).await);
    }

    // Every accepted event is in the rollups, exactly: summary over a span holding them all.
    let (from, to) = (
        now - ChronoDuration::hours(3),
        now + ChronoDuration::hours(26),
    );
    let span = Span::aligned(from.timestamp_millis(), to.timestamp_millis(), 3_600, 0);
    let query = format!("from={}&to={}", rfc3339(from), rfc3339(to));
    let path = format!("/v1/metrics/summary?{query}");
    let events: Vec<Event> = accepted
        .iter()
        .map(|e| serde_json::from_value(e.clone()).expect("an accepted event reads back"))
        .collect();
    let truth = serde_json::from_str::<Value>(
        &Truth::new(events)
            .summary(span, &Default::default())
            .to_string(),
    )
    .expect("JSON");
    let answer = env.poll(&env.key_a, &path, WAIT, |b| b == &truth).await;
    assert_eq!(answer, truth);
    assert_eq!(answer["sessions"].as_u64(), truth["sessions"].as_u64());
    assert!(answer["sessions"].as_u64() > Some(1000), "{answer}");

    // Content at the depth limit comes back as it was sent.
    let (_, timeline) = env.get(&env.key_a, "/v1/sessions/deep/timeline").await;
    let contents: Vec<&Value> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| &e["content"])
        .collect();
    assert!(contents.contains(&&deep_ok["content"]), "{timeline}");

    assert_ready(&env, "at the end").await;
    let metrics = env.aggregator_metrics().await;
    assert!(
        metrics.contains("tally_aggregator_records_total{outcome=\"rejected\"} 3"),
        "{metrics}"
    );
    env.finish().await;
}
