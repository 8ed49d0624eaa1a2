//! Property tests of the batch parser: arbitrary bytes, arbitrary JSON events and mutated
//! valid events never panic, and every answer keeps the contract: each event is either
//! accepted or rejected once, rejections name their index and reason, and accepted events
//! survive a round trip through their wire form.

use chrono::{TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tally_schema::validate::{parse_batch, validate_event, Limits, RejectCode};

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0)
        .single()
        .expect("date")
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(json!("2026-11-22T09:00:00Z")),
        Just(json!("0193a1b2-0000-7000-8000-000000000001")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_event(i: u32) -> Value {
    json!({
        "event_id": format!("0193a1b2-0000-7000-8000-{i:012}"),
        "type": "llm_response",
        "timestamp": "2026-11-22T09:59:58.120Z",
        "session_id": "s-1",
        "account_id": "acct-1",
        "operation": "chat",
        "model": "gpt-4o",
        "provider": "openai",
        "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 1000, "cache_write_tokens": 0},
        "cost_usd": 0.0123,
        "duration_ms": 842,
        "status": "ok",
        "tool": {"name": "search", "call_id": "c1"},
        "error": {"type": "E", "message": "m"},
        "content": {"text": "hello"},
        "attributes": {"region": "eu", "retry": false}
    })
}

const FIELDS: [&str; 17] = [
    "event_id",
    "type",
    "timestamp",
    "session_id",
    "account_id",
    "operation",
    "model",
    "provider",
    "usage",
    "cost_usd",
    "duration_ms",
    "time_to_first_token_ms",
    "status",
    "tool",
    "error",
    "content",
    "attributes",
];

/// A valid event with some fields removed or replaced by arbitrary JSON.
fn mutated_event() -> impl Strategy<Value = Value> {
    (
        0u32..1000,
        prop::collection::vec((0..FIELDS.len(), prop::option::of(any_json())), 0..5),
    )
        .prop_map(|(i, edits)| {
            let mut event = valid_event(i);
            let object = event.as_object_mut().expect("object");
            for (field, replacement) in edits {
                match replacement {
                    Some(value) => object.insert(FIELDS[field].to_owned(), value),
                    None => object.remove(FIELDS[field]),
                };
            }
            event
        })
}

fn check_contract(batch: &[Value]) {
    let body = serde_json::to_vec(&json!({ "batch": batch })).expect("json");
    let limits = Limits::default();
    let parsed = match parse_batch(&body, &limits, now()) {
        Ok(parsed) => parsed,
        Err(err) => {
            assert!(
                batch.is_empty() || batch.len() > limits.max_batch_events,
                "{err}"
            );
            return;
        }
    };
    assert_eq!(parsed.events.len() + parsed.rejected.len(), batch.len());
    let mut indexes: Vec<usize> = parsed.rejected.iter().map(|r| r.index).collect();
    indexes.dedup();
    assert_eq!(
        indexes.len(),
        parsed.rejected.len(),
        "one rejection per event"
    );
    for rejection in &parsed.rejected {
        assert!(rejection.index < batch.len());
        assert!(!rejection.message.is_empty());
        let fieldless = matches!(
            rejection.code,
            RejectCode::NotAnObject | RejectCode::EventTooLarge
        );
        assert!(
            fieldless || rejection.field.is_some(),
            "{rejection:?} names no field"
        );
    }
    for event in parsed.events {
        // Through its wire text, as a resend would go: `content` is kept as text and numbers
        // are read back exactly (serde_json's `float_roundtrip`), so the round trip is exact.
        let wire = serde_json::to_string(&event).expect("serializes");
        let body = format!("{{\"batch\":[{wire}]}}");
        let again = parse_batch(body.as_bytes(), &limits, now()).expect("a batch");
        assert!(
            again.rejected.is_empty(),
            "an accepted event stays valid: {:?}",
            again.rejected
        );
        assert_eq!(again.events, vec![event.clone()], "wire round trip");
        // And through a parsed value, as the event schema tests read it.
        let value = serde_json::to_value(&event).expect("serializes");
        let object: &Map<String, Value> = value.as_object().expect("object");
        validate_event(object, &limits, now()).expect("an accepted event stays valid");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_batch(&bytes, &Limits::default(), now());
    }

    #[test]
    fn arbitrary_events_keep_the_contract(batch in prop::collection::vec(any_json(), 0..12)) {
        check_contract(&batch);
    }

    #[test]
    fn mutated_events_keep_the_contract(batch in prop::collection::vec(mutated_event(), 1..12)) {
        check_contract(&batch);
    }
}
