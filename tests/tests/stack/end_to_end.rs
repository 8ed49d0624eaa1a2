//! The whole write and read path on the real stack: HTTP → Kafka → aggregator → ClickHouse → HTTP.

use chrono::{Duration as ChronoDuration, Utc};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tally_schema::event::Event;
use tally_schema::pricing::PriceTable;
use tally_tests::workload::{batch_body, Workload};
use tally_tests::TestEnv;

const WAIT: Duration = Duration::from_secs(60);

/// The events of each session, in timeline order (timestamp, then event_id).
fn by_session(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut sessions: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for event in events {
        sessions
            .entry(event["session_id"].as_str().expect("session").to_owned())
            .or_default()
            .push(event.clone());
    }
    for list in sessions.values_mut() {
        list.sort_by_key(|e| {
            (
                e["timestamp"].as_str().map(str::to_owned),
                e["event_id"].as_str().map(str::to_owned),
            )
        });
    }
    sessions
}

fn u(event: &Value, path: &[&str]) -> u64 {
    path.iter().fold(event, |v, p| &v[*p]).as_u64().unwrap_or(0)
}

/// The rollup the aggregator should produce, computed here from what was sent.
fn expected_rollup(events: &[Value]) -> Value {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut models = BTreeSet::new();
    let mut cost_nanos: u64 = 0;
    let mut computed_nanos: i64 = 0;
    let prices = PriceTable::built_in();
    for e in events {
        let event: Event = serde_json::from_value(e.clone()).expect("a valid event");
        if !event.usage.is_zero() {
            let model = event.model.as_deref().expect("usage comes with a model");
            computed_nanos += prices
                .cost_nanos(model, event.timestamp, &event.usage)
                .expect("a priced model");
        }
        *counts
            .entry(e["type"].as_str().expect("type").to_owned())
            .or_default() += 1;
        if let Some(model) = e["model"].as_str() {
            models.insert(model.to_owned());
        }
        if let Some(cost) = e["cost_usd"].as_f64() {
            cost_nanos += (cost * 1e9).round() as u64;
        }
    }
    let sum = |field: &str| events.iter().map(|e| u(e, &["usage", field])).sum::<u64>();
    let count = |kind: &str| counts.get(kind).copied().unwrap_or(0);
    let errors = events
        .iter()
        .filter(|e| e["type"] == "error" || e["status"] == "error")
        .count();
    let first = events.first().expect("events");
    let last = events
        .iter()
        .map(|e| e["timestamp"].as_str().expect("ts"))
        .max()
        .expect("events");
    json!({
        "session_id": first["session_id"],
        "account_id": first["account_id"],
        "started_at": events.iter().map(|e| e["timestamp"].as_str().expect("ts")).min(),
        "last_event_at": last,
        "event_count": events.len(),
        "event_counts": counts,
        "llm_calls": count("llm_request"),
        "tool_calls": count("tool_call"),
        "errors": errors,
        "usage": {
            "input_tokens": sum("input_tokens"),
            "output_tokens": sum("output_tokens"),
            "cache_read_tokens": sum("cache_read_tokens"),
            "cache_write_tokens": sum("cache_write_tokens"),
        },
        "provided_cost_nanos": cost_nanos,
        "computed_cost_nanos": computed_nanos,
        "unpriced_events": 0,
        "models_truncated": models.len() > tally_schema::rows::MAX_SESSION_MODELS,
        "models": models,
        "state": if count("session_end") > 0 { "ended" } else { "active" },
        "status": if errors > 0 { "error" } else { "ok" },
    })
}

/// The answer of `GET /v1/sessions/{id}`, in the shape of [`expected_rollup`].
fn comparable(summary: &Value) -> Value {
    let mut out = summary.clone();
    let object = out.as_object_mut().expect("object");
    let cost = object
        .remove("provided_cost_usd")
        .and_then(|c| c.as_f64())
        .expect("cost");
    object.insert(
        "provided_cost_nanos".into(),
        json!((cost * 1e9).round() as u64),
    );
    let computed = object
        .remove("cost_usd")
        .and_then(|c| c.as_f64())
        .expect("cost");
    object.insert(
        "computed_cost_nanos".into(),
        json!((computed * 1e9).round() as i64),
    );
    object.remove("duration_ms");
    out
}

async fn read_back(env: &TestEnv, key: &str, sent: &BTreeMap<String, Vec<Value>>) {
    for (session_id, events) in sent {
        let timeline = env
            .poll(
                key,
                &format!("/v1/sessions/{session_id}/timeline"),
                WAIT,
                |body| {
                    body["events"]
                        .as_array()
                        .is_some_and(|e| e.len() == events.len())
                },
            )
            .await;
        assert_eq!(
            &timeline["events"].as_array().expect("events")[..],
            &events[..],
            "timeline of {session_id}"
        );

        let expected = expected_rollup(events);
        let summary = env
            .poll(key, &format!("/v1/sessions/{session_id}"), WAIT, |body| {
                body["event_count"] == expected["event_count"]
            })
            .await;
        assert_eq!(comparable(&summary), expected, "rollup of {session_id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_comes_back_as_timelines_and_rollups() {
    let env = TestEnv::start().await;
    let mut workload = Workload::new(7, Utc::now() - ChronoDuration::hours(2));
    let mut events = workload.sessions(6, 3);

    // One bad event in the middle of the batch: its account is missing.
    let mut bad = events[3].clone();
    bad["event_id"] = json!(uuid::Uuid::new_v4().to_string());
    bad.as_object_mut().expect("object").remove("account_id");
    events.insert(4, bad.clone());

    let response = env.post_batch(&env.key_a, &batch_body(&events)).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["accepted"], events.len() - 1);
    assert_eq!(
        answer["rejected"],
        json!([{"index": 4, "event_id": bad["event_id"], "code": "missing_field", "field": "account_id", "message": "account_id is required"}])
    );

    events.remove(4);
    read_back(&env, &env.read_key_a, &by_session(&events)).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_batch_changes_no_total() {
    let env = TestEnv::start().await;
    let mut workload = Workload::new(11, Utc::now() - ChronoDuration::minutes(30));
    let events = workload.sessions(4, 2);
    let body = batch_body(&events);
    for _ in 0..3 {
        let response = env.post_batch(&env.key_a, &body).await;
        assert_eq!(response.status(), 200);
    }
    // Split differently too: an SDK may resend part of what it sent.
    let half = batch_body(&events[..events.len() / 2]);
    assert_eq!(env.post_batch(&env.key_a, &half).await.status(), 200);

    let sent = by_session(&events);
    read_back(&env, &env.key_a, &sent).await;
    // Give the aggregator time to fold every resend, then read again: nothing moved.
    let marker = Workload::new(12, Utc::now()).session(0, "marker");
    assert_eq!(
        env.post_batch(&env.key_a, &batch_body(&marker))
            .await
            .status(),
        200
    );
    let marker_session = marker[0]["session_id"]
        .as_str()
        .expect("session")
        .to_owned();
    env.poll(
        &env.key_a,
        &format!("/v1/sessions/{marker_session}"),
        WAIT,
        |b| b["event_count"] == marker.len(),
    )
    .await;
    read_back(&env, &env.key_a, &sent).await;
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_sees_only_its_own_sessions() {
    let env = TestEnv::start().await;
    let events = Workload::new(21, Utc::now() - ChronoDuration::minutes(5)).session(0, "acct-a");
    let session_id = events[0]["session_id"]
        .as_str()
        .expect("session")
        .to_owned();
    assert_eq!(
        env.post_batch(&env.key_a, &batch_body(&events))
            .await
            .status(),
        200
    );
    env.poll(
        &env.key_a,
        &format!("/v1/sessions/{session_id}/timeline"),
        WAIT,
        |b| {
            b["events"]
                .as_array()
                .is_some_and(|e| e.len() == events.len())
        },
    )
    .await;

    for path in [
        format!("/v1/sessions/{session_id}"),
        format!("/v1/sessions/{session_id}/timeline"),
    ] {
        let (status, body) = env.get(&env.key_b, &path).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &json!("not_found")),
            "{path}"
        );
        let (status, body) = env.get("not-a-key", &path).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (401, &json!("unauthorized")),
            "{path}"
        );
    }
    // A read-only key cannot post.
    let response = env.post_batch(&env.read_key_a, &batch_body(&events)).await;
    assert_eq!(response.status(), 403);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redaction_happens_before_anything_leaves_ingest() {
    let env = TestEnv::start_with(tally_tests::env::Options {
        redact_b: tally_ingest::auth::Redaction {
            drop_content: true,
            hash_account_id: true,
            account_id_secret: "project-b-account-secret".into(),
        },
        ..Default::default()
    })
    .await;
    let events =
        Workload::new(31, Utc::now() - ChronoDuration::minutes(5)).session(0, "acct-secret");
    assert!(events.iter().any(|e| e.get("content").is_some()));
    let session_id = events[0]["session_id"]
        .as_str()
        .expect("session")
        .to_owned();
    assert_eq!(
        env.post_batch(&env.key_b, &batch_body(&events))
            .await
            .status(),
        200
    );
    let timeline = env
        .poll(
            &env.key_b,
            &format!("/v1/sessions/{session_id}/timeline"),
            WAIT,
            |b| {
                b["events"]
                    .as_array()
                    .is_some_and(|e| e.len() == events.len())
            },
        )
        .await;
    let hashed = tally_ingest::auth::keyed_hash("project-b-account-secret", "b:acct-secret");
    for event in timeline["events"].as_array().expect("events") {
        assert_eq!(event["account_id"], json!(hashed));
        assert!(
            event.get("content").is_none(),
            "content was dropped: {event}"
        );
    }
    // The read filters take the account's own id and hash it the same way.
    let from = (Utc::now() - ChronoDuration::hours(2)).to_rfc3339();
    let summary = env
        .poll(
            &env.key_b,
            &format!(
                "/v1/metrics/summary?from={}&account_id=acct-secret",
                urlencode(&from)
            ),
            WAIT,
            |b| b["events"] == json!(events.len()),
        )
        .await;
    assert_eq!(summary["events"], json!(events.len()));
    let (_, list) = env
        .get(
            &env.key_b,
            &format!(
                "/v1/sessions?from={}&account_id=acct-secret",
                urlencode(&from)
            ),
        )
        .await;
    assert_eq!(list["sessions"].as_array().map(Vec::len), Some(1), "{list}");
    // Nothing of the account's own id reached ClickHouse.
    let stored: u64 = env
        .clickhouse_client()
        .query("SELECT count() FROM events WHERE account_id = ? OR content != ''")
        .bind("acct-secret")
        .fetch_one()
        .await
        .expect("count");
    assert_eq!(stored, 0);
    env.finish().await;
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}
