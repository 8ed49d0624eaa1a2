use super::*;
use tally_schema::event::{Event, EventType, Timestamp, Usage};

fn event(id: u128, session: &str, event_type: EventType, input: u64) -> Event {
    Event {
        event_id: uuid::Uuid::from_u128(id).to_string(),
        event_type,
        timestamp: Timestamp(1_700_000_000_000 + id as i64),
        session_id: session.into(),
        account_id: "acct".into(),
        trace_id: None,
        span_id: None,
        parent_span_id: None,
        operation: None,
        model: Some("gpt-4o".into()),
        provider: Some("openai".into()),
        usage: Usage {
            input_tokens: input,
            output_tokens: 1,
            cache_read_tokens: 0,
            cache_write_tokens: 0,
        },
        provided_cost_nanos: Some(5),
        duration_ms: None,
        time_to_first_token_ms: None,
        status: None,
        tool: None,
        error: None,
        content: None,
        attributes: Default::default(),
    }
}

fn record(offset: u64, event: Event) -> Record {
    Record {
        partition: 0,
        offset,
        envelope: Envelope::new("proj", 1_700_000_000_000 + offset as i64, event),
    }
}

fn folder_with_loaded(records: &[Record]) -> Folder {
    let mut folder = Folder::new(DedupConfig::default(), 1000);
    for (project, sessions) in folder.sessions_to_load(records) {
        folder.add_loaded(&project, &sessions, Vec::new());
    }
    folder
}

#[test]
fn folds_counts_tokens_and_types() {
    let records = vec![
        record(0, event(1, "s1", EventType::SessionStart, 0)),
        record(1, event(2, "s1", EventType::LlmRequest, 100)),
        record(2, event(3, "s2", EventType::LlmRequest, 7)),
        record(3, event(4, "s1", EventType::Error, 0)),
    ];
    let mut folder = folder_with_loaded(&records);
    let out = folder.fold(&records);
    assert_eq!(out.events.len(), 4);
    let s1 = out
        .sessions
        .iter()
        .find(|s| s.session_id == "s1")
        .expect("s1");
    assert_eq!(
        (s1.event_count, s1.llm_calls, s1.errors, s1.input_tokens),
        (3, 1, 1, 100)
    );
    assert_eq!(s1.provided_cost_nanos, 15);
    assert_eq!(s1.kafka_offset, 3);
    assert_eq!(s1.counts_by_type().get("error"), Some(&1));
}

#[test]
fn a_redelivered_batch_changes_nothing() {
    let records: Vec<Record> = (0..5)
        .map(|i| record(i, event(u128::from(i) + 1, "s", EventType::LlmRequest, 10)))
        .collect();
    let mut folder = folder_with_loaded(&records);
    let first = folder.fold(&records);
    let state = first.sessions[0].clone();

    // A restarted aggregator reloads the row and sees the same records again.
    let mut restarted = Folder::new(DedupConfig::default(), 1000);
    restarted.add_loaded("proj", &["s".into()], vec![state.clone()]);
    let again = restarted.fold(&records);
    assert!(again.events.is_empty());
    assert_eq!(again.redeliveries_skipped, 5);
    assert!(again.sessions.is_empty());
}

#[test]
fn an_sdk_resend_is_skipped() {
    let original = record(0, event(9, "s", EventType::LlmRequest, 10));
    let resend = record(1, event(9, "s", EventType::LlmRequest, 10));
    let records = vec![original, resend];
    let mut folder = folder_with_loaded(&records);
    let out = folder.fold(&records);
    assert_eq!(out.events.len(), 1);
    assert_eq!(out.resends_skipped, 1);
    assert_eq!(out.sessions[0].input_tokens, 10);
}

#[test]
fn a_record_written_raw_before_a_crash_is_still_folded() {
    // The raw row of offset 0 reached ClickHouse, the session row did not: the rebuilt window
    // knows the id at the same offset, which must not read as a resend.
    let records = vec![record(0, event(1, "s", EventType::LlmRequest, 10))];
    let mut folder = folder_with_loaded(&records);
    folder.remember(0, "proj", &uuid::Uuid::from_u128(1).to_string(), 0, 0);
    let out = folder.fold(&records);
    assert_eq!(out.sessions[0].input_tokens, 10);
}
