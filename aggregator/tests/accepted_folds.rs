//! Accepted means folded, as a property: for generated and mutated batches, including the
//! hostile shapes (deep content, strings of emoji and control characters, numbers at and past
//! their maxima, timestamps at the edges of the window), every event ingest's parser accepts
//! is encoded into its Kafka envelope, decoded by the aggregator, folded into every row it
//! belongs to, and reads back from its raw-event row as it was accepted. 100,000 cases a run
//! (`ACCEPTED_FOLDS_CASES` changes it).
//!
//! Pure: no Kafka or ClickHouse needed.

use chrono::{Duration, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{json, Value};
use tally_aggregator::dedup::DedupConfig;
use tally_aggregator::fold::{Folder, Record};
use tally_schema::envelope::Envelope;
use tally_schema::pricing::PriceTable;
use tally_schema::rows::EventRow;
use tally_schema::validate::{parse_batch, Limits};

fn now() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 23, 30, 0)
        .single()
        .expect("date")
}

fn prices() -> PriceTable {
    static PRICES: std::sync::OnceLock<PriceTable> = std::sync::OnceLock::new();
    PRICES.get_or_init(PriceTable::built_in).clone()
}

fn cases() -> u32 {
    std::env::var("ACCEPTED_FOLDS_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Strings a client may send: ASCII, emoji, control characters, quotes and backslashes, up
/// to a little past the 128-character limit.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9-]{1,20}",
        "[\u{1F300}-\u{1F5FF}]{1,130}",
        "[\\x00-\\x1f\"\\\\'\u{7f}]{1,20}",
        ".{1,130}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..=2_000).prop_map(Value::from),
        Just(json!(1_000_000_000_000u64)),
        Just(json!(1_000_000_000_001u64)),
        Just(json!(1_000_000_000u64)),
        Just(json!(u64::MAX)),
        Just(json!(-1)),
        Just(json!(1.5)),
        any::<u64>().prop_map(Value::from),
    ]
}

/// JSON of a given depth or so, with strings and numbers of every kind.
fn content() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0usize..40).prop_map(|d| {
            serde_json::from_str(&format!("{}1{}", "[".repeat(d), "]".repeat(d))).expect("JSON")
        }),
        (0usize..40, text()).prop_map(|(d, s)| {
            let mut v = json!(s);
            for _ in 0..d {
                v = json!({ "k": v });
            }
            v
        }),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!([f, -0.0, 1e300])),
    ]
}

fn timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-90 * 24 * 60i64..24 * 60 + 5).prop_map(|m| json!(
            (now() + Duration::minutes(m)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        )),
        Just(json!("2026-11-30T23:30:00+14:00")),
        Just(json!("2026-12-01T23:29:59.999Z")),
        Just(json!("9999-12-31T23:59:59Z")),
        Just(json!("1970-01-01T00:00:00Z")),
    ]
}

const TYPES: [&str; 11] = [
    "session_start",
    "session_end",
    "user_message",
    "llm_request",
    "llm_response",
    "tool_call",
    "tool_result",
    "knowledge",
    "error",
    "artifact",
    "custom",
];

fn event() -> impl Strategy<Value = Value> {
    (
        (0..TYPES.len(), any::<u128>(), timestamp(), text(), text()),
        (number(), number(), number(), number()),
        (number(), number(), prop::option::of(content())),
        (text(), prop::option::of(text()), any::<bool>()),
    )
        .prop_map(
            |(
                (kind, id, timestamp, session, account),
                (input, output, cache_read, duration),
                (ttft, cost, content),
                (name, model, failed),
            )| {
                let mut e = json!({
                    "event_id": uuid::Uuid::from_u128(id).to_string(),
                    "type": TYPES[kind],
                    "timestamp": timestamp,
                    "session_id": session,
                    "account_id": account,
                    "model": model.unwrap_or_else(|| "gpt-4o".into()),
                    "provider": "openai",
                    "operation": name,
                    "usage": {"input_tokens": input, "output_tokens": output,
                              "cache_read_tokens": cache_read},
                    "duration_ms": duration,
                    "time_to_first_token_ms": ttft,
                    "tool": {"name": name, "call_id": "c"},
                    "error": {"type": "E", "message": "m"},
                    "status": if failed { "error" } else { "ok" },
                    "attributes": {"k": name, "n": 1},
                });
                if let Value::Number(n) = &cost {
                    e["cost_usd"] = json!(n.as_f64().map(|f| f / 1e6));
                }
                if let Some(content) = content {
                    e["content"] = content;
                }
                e
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn accepted_events_are_decoded_and_folded(batch in prop::collection::vec(event(), 1..6)) {
        let body = serde_json::to_vec(&json!({ "batch": batch })).expect("JSON");
        let parsed = parse_batch(&body, &Limits::default(), now()).expect("a batch");
        prop_assert_eq!(parsed.events.len() + parsed.rejected.len(), batch.len());

        let mut records = Vec::new();
        for (offset, event) in parsed.events.iter().enumerate() {
            let envelope = Envelope::new("p", now().timestamp_millis(), event.clone());
            let decoded = Envelope::decode(&envelope.encode());
            prop_assert!(decoded.is_ok(), "an accepted event decodes: {:?}", decoded.err());
            let decoded = decoded.expect("decoded");
            prop_assert_eq!(&decoded, &envelope);
            records.push(Record { partition: 0, offset: offset as u64, envelope: decoded });
        }

        let mut folder = Folder::new(DedupConfig::default(), prices(), 10_000, 10_000);
        let plan = folder.plan(&records);
        for (project, sessions) in plan.sessions {
            folder.add_sessions(&project, &sessions, Vec::new());
        }
        // An empty ClickHouse: the usage and tool rows the plan lists do not exist yet.
        prop_assert_eq!(plan.rows.is_empty(), records.is_empty());
        let out = folder.fold(records);
        prop_assert_eq!(out.events.len(), parsed.events.len(), "every accepted event is folded");
        prop_assert_eq!(out.quota.len(), parsed.events.len());
        let input: u64 = parsed.events.iter().map(|e| e.usage.input_tokens).sum();
        let folded: u64 = out.usage_daily.iter().map(|r| r.input_tokens).sum();
        prop_assert_eq!(folded, input, "daily rows hold every input token");
        for (row, event) in out.events.into_iter().zip(&parsed.events) {
            let back: EventRow = row;
            prop_assert_eq!(&back.into_event(), event, "the timeline returns what was accepted");
        }
    }
}
