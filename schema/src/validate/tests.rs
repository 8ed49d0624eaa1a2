use super::*;
use chrono::TimeZone;
use serde_json::json;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0)
        .single()
        .expect("valid date")
}

fn good_event() -> Value {
    json!({
        "event_id": "0193a1b2-0000-7000-8000-000000000001",
        "type": "llm_response",
        "timestamp": "2026-11-22T09:59:58.120Z",
        "session_id": "sess-1",
        "account_id": "acct-1",
        "model": "gpt-4o",
        "provider": "openai",
        "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 1000, "cache_write_tokens": 0},
        "cost_usd": 0.0123,
        "duration_ms": 842,
        "status": "ok",
        "attributes": {"region": "eu", "retry": false, "attempt": 1}
    })
}

fn parse(batch: Vec<Value>) -> ParsedBatch {
    let body = serde_json::to_vec(&json!({ "batch": batch })).expect("json");
    parse_batch(&body, &Limits::default(), now()).expect("batch parses")
}

fn only_rejection(event: Value) -> Rejection {
    let parsed = parse(vec![event]);
    assert!(parsed.events.is_empty(), "event was accepted");
    parsed.rejected.into_iter().next().expect("one rejection")
}

fn with(field: &str, value: Value) -> Value {
    let mut event = good_event();
    event[field] = value;
    event
}

fn without(field: &str) -> Value {
    let mut event = good_event();
    event.as_object_mut().expect("object").remove(field);
    event
}

#[test]
fn a_good_event_is_accepted_with_every_field() {
    let parsed = parse(vec![good_event()]);
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    let event = &parsed.events[0];
    assert_eq!(event.event_type, EventType::LlmResponse);
    assert_eq!(event.timestamp.to_rfc3339(), "2026-11-22T09:59:58.120Z");
    assert_eq!(event.usage.cache_read_tokens, 1000);
    assert_eq!(event.provided_cost_nanos, Some(12_300_000));
    assert_eq!(event.status, Some(Status::Ok));
    assert_eq!(event.attributes.len(), 3);
}

#[test]
fn the_wire_form_round_trips() {
    let parsed = parse(vec![good_event()]);
    let back = serde_json::to_value(&parsed.events[0]).expect("serializes");
    assert_eq!(back, good_event());
}

#[test]
fn missing_required_fields_are_named() {
    for field in [
        "event_id",
        "type",
        "timestamp",
        "session_id",
        "account_id",
        "model",
        "provider",
    ] {
        let rejection = only_rejection(without(field));
        assert_eq!(rejection.code, RejectCode::MissingField, "{field}");
        assert_eq!(rejection.field.as_deref(), Some(field));
        assert!(rejection.message.contains(field), "{}", rejection.message);
    }
}

#[test]
fn wrong_types_are_named() {
    let cases = [
        ("session_id", json!(42), "session_id"),
        ("duration_ms", json!("fast"), "duration_ms"),
        ("cost_usd", json!("0.1"), "cost_usd"),
        ("usage", json!([1, 2]), "usage"),
        (
            "attributes",
            json!({"nested": {"a": 1}}),
            "attributes.nested",
        ),
    ];
    for (field, value, named) in cases {
        let rejection = only_rejection(with(field, value));
        assert_eq!(rejection.code, RejectCode::InvalidType, "{field}");
        assert_eq!(rejection.field.as_deref(), Some(named));
    }
    let rejection = only_rejection(with("usage", json!({"input_tokens": "many"})));
    assert_eq!(rejection.field.as_deref(), Some("usage.input_tokens"));
}

#[test]
fn bad_values_are_named() {
    let cases = [
        (
            with("event_id", json!("not-a-uuid")),
            RejectCode::InvalidValue,
            "event_id",
        ),
        (
            with("type", json!("llm_thought")),
            RejectCode::UnknownEventType,
            "type",
        ),
        (
            with("timestamp", json!("yesterday")),
            RejectCode::InvalidValue,
            "timestamp",
        ),
        (
            with("timestamp", json!("2026-11-24T10:00:00Z")),
            RejectCode::TimestampInFuture,
            "timestamp",
        ),
        (
            with("timestamp", json!("2026-01-01T00:00:00Z")),
            RejectCode::TimestampTooOld,
            "timestamp",
        ),
        (
            with("account_id", json!("a".repeat(129))),
            RejectCode::TooLong,
            "account_id",
        ),
        (
            with("cost_usd", json!(-0.5)),
            RejectCode::InvalidValue,
            "cost_usd",
        ),
        (
            with("duration_ms", json!(-3)),
            RejectCode::InvalidValue,
            "duration_ms",
        ),
        (
            with("duration_ms", json!(1.5)),
            RejectCode::InvalidValue,
            "duration_ms",
        ),
        (
            with("status", json!("fine")),
            RejectCode::InvalidValue,
            "status",
        ),
        (
            with(
                "usage",
                json!({"input_tokens": 10, "cache_read_tokens": 8, "cache_write_tokens": 5}),
            ),
            RejectCode::InvalidValue,
            "usage.input_tokens",
        ),
    ];
    for (event, code, field) in cases {
        let rejection = only_rejection(event);
        assert_eq!(
            (rejection.code, rejection.field.as_deref()),
            (code, Some(field))
        );
    }
}

#[test]
fn tool_and_error_events_need_their_objects() {
    let mut tool_call = without("model");
    tool_call["type"] = json!("tool_call");
    let rejection = only_rejection(tool_call.clone());
    assert_eq!(rejection.field.as_deref(), Some("tool"));
    tool_call["tool"] = json!({"call_id": "c1"});
    assert_eq!(
        only_rejection(tool_call.clone()).field.as_deref(),
        Some("tool.name")
    );
    tool_call["tool"] = json!({"name": "search", "call_id": "c1"});
    assert_eq!(parse(vec![tool_call]).events.len(), 1);

    let mut error = good_event();
    error["type"] = json!("error");
    assert_eq!(
        only_rejection(error.clone()).field.as_deref(),
        Some("error")
    );
    error["error"] = json!({"type": "RateLimit", "message": "slow down"});
    assert_eq!(parse(vec![error]).events.len(), 1);
}

#[test]
fn one_bad_event_leaves_the_others_alone() {
    let mut second = good_event();
    second["event_id"] = json!("0193a1b2-0000-7000-8000-000000000002");
    let parsed = parse(vec![
        good_event(),
        json!("not an object"),
        second,
        good_event(),
    ]);
    assert_eq!(parsed.events.len(), 2);
    let codes: Vec<_> = parsed.rejected.iter().map(|r| (r.index, r.code)).collect();
    assert_eq!(
        codes,
        vec![
            (1, RejectCode::NotAnObject),
            (3, RejectCode::DuplicateEventId)
        ]
    );
    assert_eq!(
        parsed.rejected[1].event_id.as_deref(),
        Some("0193a1b2-0000-7000-8000-000000000001")
    );
}

#[test]
fn oversized_events_are_rejected_alone() {
    let limits = Limits {
        max_event_bytes: 2048,
        ..Limits::default()
    };
    let big = with("content", json!("x".repeat(4096)));
    let body = serde_json::to_vec(&json!({ "batch": [big] })).expect("json");
    let parsed = parse_batch(&body, &limits, now()).expect("parses");
    assert_eq!(parsed.rejected[0].code, RejectCode::EventTooLarge);
    assert_eq!(
        parsed.rejected[0].event_id.as_deref(),
        Some("0193a1b2-0000-7000-8000-000000000001")
    );
}

#[test]
fn envelope_errors_fail_the_request() {
    let limits = Limits {
        max_batch_events: 2,
        ..Limits::default()
    };
    let cases: Vec<(&[u8], &str)> = vec![
        (b"{not json", "invalid_json"),
        (b"[]", "invalid_batch"),
        (b" [[{}]]", "invalid_batch"),
        (b"{\"events\": []}", "invalid_batch"),
        (b"{\"batch\": {}}", "invalid_batch"),
        (b"{\"batch\": []}", "invalid_batch"),
        (b"{\"batch\": [{}], \"sent_at\": \"soon\"}", "invalid_batch"),
        (b"{\"batch\": [1, 2, 3]}", "too_many"),
    ];
    for (body, expected) in cases {
        let err = parse_batch(body, &limits, now()).expect_err("must fail");
        let kind = match err {
            BatchError::InvalidJson(_) => "invalid_json",
            BatchError::InvalidBatch(_) => "invalid_batch",
            BatchError::TooManyEvents { .. } => "too_many",
        };
        assert_eq!(kind, expected, "{}", String::from_utf8_lossy(body));
    }
}

fn nested(depth: usize) -> Value {
    serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth))).expect("JSON")
}

#[test]
fn content_is_kept_as_sent_up_to_the_depth_limit() {
    let limits = Limits::default();
    let text = r#"{"b": [1, 2.50, "\u00e9"], "a": {}}"#;
    let body = format!(
        r#"{{"batch": [{}]}}"#,
        good_event()
            .to_string()
            .replacen('{', &format!(r#"{{"content": {text},"#), 1)
    );
    let parsed = parse_batch(body.as_bytes(), &limits, now()).expect("batch");
    let content = parsed.events[0].content.as_ref().expect("content");
    assert_eq!(
        content.get(),
        text,
        "the client's text, not a re-serialization"
    );

    let deepest = parse(vec![with("content", nested(limits.max_content_depth))]);
    assert_eq!(deepest.events.len(), 1, "{:?}", deepest.rejected);
    for depth in [limits.max_content_depth + 1, 126, 5000] {
        let mut event = good_event();
        event["content"] = json!(null);
        let body = format!(
            r#"{{"batch": [{}]}}"#,
            event.to_string().replace(
                r#""content":null"#,
                &format!(r#""content":{}1{}"#, "[".repeat(depth), "]".repeat(depth))
            )
        );
        let parsed = parse_batch(body.as_bytes(), &limits, now()).expect("batch");
        let rejection = &parsed.rejected[0];
        assert_eq!(
            rejection.code,
            RejectCode::TooDeep,
            "{depth}: {rejection:?}"
        );
        assert_eq!(rejection.field.as_deref(), Some("content"));
        assert!(
            rejection.message.contains(&depth.to_string()),
            "{rejection:?}"
        );
    }
}

#[test]
fn json_depth_counts_nesting_outside_strings() {
    assert_eq!(json_depth("1"), 0);
    assert_eq!(json_depth(r#""[[[""#), 0);
    assert_eq!(json_depth(r#"[{"a": [1, "]]]\"[["]}, []]"#), 3);
    assert_eq!(
        json_depth(&format!("{}{}", "[".repeat(40), "]".repeat(40))),
        40
    );
}

#[test]
fn numbers_past_their_maxima_are_refused_naming_the_field() {
    let limits = Limits::default();
    let mut usage = good_event();
    usage["usage"]["output_tokens"] = json!(limits.max_tokens + 1);
    let rejection = only_rejection(usage);
    assert_eq!(
        (rejection.code, rejection.field.as_deref()),
        (RejectCode::InvalidValue, Some("usage.output_tokens"))
    );
    let rejection = only_rejection(with("duration_ms", json!(limits.max_duration_ms + 1)));
    assert_eq!(rejection.field.as_deref(), Some("duration_ms"));
    let rejection = only_rejection(with("time_to_first_token_ms", json!(u64::MAX)));
    assert_eq!(rejection.field.as_deref(), Some("time_to_first_token_ms"));
    let rejection = only_rejection(with("cost_usd", json!(1_000_000.01)));
    assert_eq!(rejection.field.as_deref(), Some("cost_usd"));

    let mut at_max = with("duration_ms", json!(limits.max_duration_ms));
    at_max["usage"] =
        json!({"input_tokens": limits.max_tokens, "output_tokens": limits.max_tokens});
    at_max["cost_usd"] = json!(1_000_000);
    let parsed = parse(vec![at_max]);
    assert!(parsed.rejected.is_empty(), "{:?}", parsed.rejected);
    assert_eq!(
        parsed.events[0].provided_cost_nanos,
        Some(MAX_EVENT_COST_NANOS)
    );
}

#[test]
fn a_field_that_cannot_be_read_is_named() {
    let body = format!(
        r#"{{"batch": [{}]}}"#,
        with("attributes", json!({"n": 1}))
            .to_string()
            .replace(r#""n":1"#, r#""n":1e400"#)
    );
    let parsed = parse_batch(body.as_bytes(), &Limits::default(), now()).expect("batch");
    assert_eq!(parsed.rejected[0].field.as_deref(), Some("attributes"));
    assert_eq!(parsed.rejected[0].code, RejectCode::InvalidValue);
}
