//! The HTTP layer alone, with a fake sink in place of Kafka: the write path's answers for
//! arbitrary and mutated bodies, sink failures, redaction and the published records.

use crate::auth::{hash_key, keyed_hash, KeyConfig, ProjectConfig, Redaction, Scope};
use crate::config::IngestConfig;
use crate::server::Services;
use crate::testing::{app, services, FakeSink};
use actix_web::{test as actix_test, web};
use proptest::prelude::*;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const KEY: &str = "test-key";

fn state(sink: Arc<FakeSink>, redact: Redaction) -> web::Data<Services> {
    let config = IngestConfig {
        projects: vec![ProjectConfig {
            id: "p".into(),
            keys: vec![KeyConfig {
                sha256: hash_key(KEY),
                scopes: vec![Scope::Ingest],
            }],
            redact,
        }],
        ..IngestConfig::default()
    };
    services(config, sink)
}

fn event(i: u32) -> Value {
    json!({
        "event_id": format!("0193a1b2-0000-7000-8000-{i:012}"),
        "type": "user_message",
        "timestamp": chrono::Utc::now().to_rfc3339(),
        "session_id": format!("s-{}", i % 3),
        "account_id": "acct-1",
        "content": {"text": "hi"},
    })
}

async fn post(state: web::Data<Services>, body: Vec<u8>) -> (u16, Value, Option<String>) {
    let app = actix_test::init_service(app(&state)).await;
    let request = actix_test::TestRequest::post()
        .uri("/v1/batch")
        .insert_header(("authorization", format!("Bearer {KEY}")))
        .insert_header(("content-type", "application/json"))
        .set_payload(body)
        .to_request();
    let response = actix_test::call_service(&app, request).await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value =
        serde_json::from_slice(&actix_test::read_body(response).await).unwrap_or(Value::Null);
    (status, body, retry_after)
}

#[actix_web::test]
async fn accepted_events_are_published_keyed_by_session() {
    let sink = Arc::new(FakeSink::default());
    let batch = json!({"batch": [event(1), event(2), {"type": "nope"}]});
    let (status, body, _) = post(
        state(sink.clone(), Redaction::default()),
        batch.to_string().into_bytes(),
    )
    .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(2)));
    let records = sink.records.lock().expect("lock");
    let keys: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["p:s-1", "p:s-2"]);
    let envelope = tally_schema::Envelope::decode(&records[0].payload).expect("envelope");
    assert_eq!(envelope.project_id, "p");
}

#[actix_web::test]
async fn a_sink_down_answers_503_with_retry_after_and_a_refused_record_413() {
    // (sink unavailable, sink refusing for good) -> (status, code, Retry-After)
    let cases = [
        ((true, false), (503, "unavailable", Some("2"))),
        ((false, true), (413, "payload_too_large", None)),
    ];
    for ((failing, refusing), expected) in cases {
        let sink = Arc::new(FakeSink::default());
        sink.failing.store(failing, Ordering::Relaxed);
        sink.refusing.store(refusing, Ordering::Relaxed);
        let (status, body, retry_after) = post(
            state(sink, Redaction::default()),
            json!({"batch": [event(1)]}).to_string().into_bytes(),
        )
        .await;
        let code = body["error"]["code"].as_str().unwrap_or_default();
        assert_eq!((status, code, retry_after.as_deref()), expected, "{body}");
    }
}

#[actix_web::test]
async fn redaction_applies_before_publishing() {
    let sink = Arc::new(FakeSink::default());
    let redact = Redaction {
        drop_content: true,
        hash_account_id: true,
        account_id_secret: "a-project-secret-of-some-length".into(),
    };
    let (status, _, _) = post(
        state(sink.clone(), redact),
        json!({"batch": [event(1)]}).to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    let records = sink.records.lock().expect("lock");
    let envelope = tally_schema::Envelope::decode(&records[0].payload).expect("envelope");
    assert_eq!(envelope.event.content, None);
    let expected = keyed_hash("a-project-secret-of-some-length", "p:acct-1");
    assert_eq!(envelope.event.account_id, expected);
    assert_ne!(expected, hash_key("p:acct-1"), "keyed, not a bare SHA-256");
    assert!(!String::from_utf8_lossy(&records[0].payload).contains("acct-1"));
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body: arbitrary bytes, arbitrary JSON, or a batch of valid events with edits.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        (prop::collection::vec((0u32..50, prop::option::of(any_json())), 1..8)).prop_map(|edits| {
            let batch: Vec<Value> = edits
                .into_iter()
                .map(|(i, edit)| {
                    let mut e = event(i);
                    if let Some(value) = edit {
                        let field = [
                            "event_id",
                            "type",
                            "timestamp",
                            "session_id",
                            "account_id",
                            "content",
                        ][i as usize % 6];
                        e[field] = value;
                    }
                    e
                })
                .collect();
            json!({ "batch": batch }).to_string().into_bytes()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn every_body_gets_a_contract_answer(body in any_body()) {
        let runtime = actix_web::rt::System::new();
        let (status, answer, _) = runtime.block_on(post(state(Arc::new(FakeSink::default()), Redaction::default()), body.clone()));
        prop_assert!(matches!(status, 200 | 400 | 413), "status {status}: {answer}");
        if status == 200 {
            let batch_len = serde_json::from_slice::<Value>(&body).ok()
                .and_then(|v| v["batch"].as_array().map(Vec::len)).unwrap_or(0) as u64;
            let accepted = answer["accepted"].as_u64().unwrap_or(u64::MAX);
            let rejected = answer["rejected"].as_array().map(Vec::len).unwrap_or(usize::MAX) as u64;
            prop_assert_eq!(accepted + rejected, batch_len);
        } else {
            prop_assert!(answer["error"]["code"].is_string() && answer["error"]["message"].is_string(), "{answer}");
        }
    }
}
