use super::*;
use tally_schema::event::{Event, EventType, Timestamp, Usage};
use tally_schema::pricing::PriceTable;

fn event(id: u128, session: &str, event_type: EventType, input: u64) -> Event {
    Event {
        event_id: uuid::Uuid::from_u128(id).to_string(),
        event_type,
        timestamp: Timestamp(1_790_000_000_000 + id as i64),
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

/// Loads what the plan asks for from an empty ClickHouse: no rows anywhere.
fn load_nothing(folder: &mut Folder, records: &[Record]) {
    let plan = folder.plan(records);
    for (project, sessions) in plan.sessions {
        folder.add_sessions(&project, &sessions, Vec::new());
    }
}

fn new_folder() -> Folder {
    Folder::new(DedupConfig::default(), PriceTable::built_in(), 1000, 1000)
}

fn folder_with_loaded(records: &[Record]) -> Folder {
    let mut folder = new_folder();
    load_nothing(&mut folder, records);
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
    let out = folder.fold(records.clone());
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
    // gpt-4o: (100 input × 2.50 + 3 output × 10.00) USD per million tokens = 280,000 nano-USD.
    assert_eq!(s1.cost_nanos, 280_000);
    let hourly_tokens: u64 = out.usage_hourly.iter().map(|r| r.input_tokens).sum();
    let daily_tokens: u64 = out.usage_daily.iter().map(|r| r.input_tokens).sum();
    assert_eq!((hourly_tokens, daily_tokens), (107, 107));
}

#[test]
fn unknown_models_cost_zero_and_are_flagged() {
    let mut e = event(1, "s", EventType::LlmResponse, 10);
    e.model = Some("house-model-7b".into());
    let records = vec![record(0, e)];
    let mut folder = folder_with_loaded(&records);
    let out = folder.fold(records.clone());
    assert_eq!(out.unpriced, 1);
    assert_eq!(
        (out.sessions[0].cost_nanos, out.sessions[0].unpriced_events),
        (0, 1)
    );
    assert_eq!(out.usage_hourly[0].unpriced_events, 1);
}

#[test]
fn a_session_lists_at_most_max_session_models_and_says_when_cut() {
    use tally_schema::rows::MAX_SESSION_MODELS;
    let count = MAX_SESSION_MODELS as u64 + 5;
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut e = event(u128::from(i) + 1, "s", EventType::LlmResponse, 1);
            e.model = Some(format!("model-{i:03}"));
            record(i, e)
        })
        .collect();
    let mut folder = folder_with_loaded(&records);
    let out = folder.fold(records.clone());
    let session = &out.sessions[0];
    assert_eq!(session.models.len(), MAX_SESSION_MODELS);
    assert_eq!(session.models_truncated, 1);
    assert_eq!(session.event_count, count);
    // The models kept are the first to arrive, and a known one never sets the flag.
    assert_eq!(session.models.last().map(String::as_str), Some("model-063"));
    let mut full = session.clone();
    full.models_truncated = 0;
    full.fold(
        &records[3].envelope.event,
        tally_schema::rows::Priced::NoUsage,
        0,
        count,
    );
    assert_eq!(full.models_truncated, 0);
}

#[test]
fn tool_events_fold_into_tool_rows() {
    let mut call = event(1, "s", EventType::ToolCall, 0);
    call.tool = Some(tally_schema::event::Tool {
        name: "search".into(),
        call_id: None,
    });
    let mut result = event(2, "s", EventType::ToolResult, 0);
    result.tool = call.tool.clone();
    result.duration_ms = Some(120);
    result.status = Some(tally_schema::event::Status::Error);
    let records = vec![record(0, call), record(1, result)];
    let mut folder = folder_with_loaded(&records);
    let out = folder.fold(records.clone());
    let tool = &out.tools[0];
    assert_eq!(
        (tool.calls, tool.results, tool.errors, tool.duration_sum_ms),
        (1, 1, 1, 120)
    );
}

#[test]
fn a_partial_write_is_completed_without_double_counting() {
    // The session row reached ClickHouse, the usage rows did not: replaying the same
    // records adds them to usage only.
    let records: Vec<Record> = (0..3)
        .map(|i| record(i, event(u128::from(i) + 1, "s", EventType::LlmRequest, 10)))
        .collect();
    let mut first = folder_with_loaded(&records);
    let written = first.fold(records.clone());
    let mut restarted = new_folder();
    restarted.add_sessions("proj", &["s".into()], written.sessions.clone());
    load_nothing(&mut restarted, &records);
    let replay = restarted.fold(records.clone());
    assert!(replay.sessions.is_empty());
    assert_eq!(replay.usage_hourly, written.usage_hourly);
    assert_eq!(
        replay.events.len(),
        3,
        "raw rows are rewritten and collapse by event_id"
    );
}

#[test]
fn past_the_cache_limit_untouched_sessions_go_before_usage_rows() {
    // Two batches of three new sessions each, in one hour and on one model: two usage rows
    // (the hour's and the day's) and six sessions pass a limit of five cached rows.
    let batch = |first: u64| -> Vec<Record> {
        (first..first + 3)
            .map(|i| {
                record(
                    i,
                    event(
                        u128::from(i) + 1,
                        &format!("s{i}"),
                        EventType::LlmResponse,
                        1,
                    ),
                )
            })
            .collect()
    };
    let mut folder = Folder::new(DedupConfig::default(), PriceTable::built_in(), 5, 1000);
    let first = batch(0);
    load_nothing(&mut folder, &first);
    folder.fold(first);
    let second = batch(3);
    let plan = folder.plan(&second);
    assert!(
        plan.rows.is_empty(),
        "the hour's and day's usage rows are cached"
    );
    for (project, sessions) in plan.sessions {
        folder.add_sessions(&project, &sessions, Vec::new());
    }
    folder.fold(second);
    // Three sessions of the first batch were dropped; the usage rows stayed, so a third batch
    // in the same hour loads its new sessions only.
    assert_eq!(folder.sessions.len(), 3);
    assert!(folder.plan(&batch(6)).rows.is_empty());
    assert_eq!(
        folder
            .plan(&batch(0))
            .sessions
            .values()
            .map(Vec::len)
            .sum::<usize>(),
        3
    );
}

#[test]
fn a_redelivered_batch_changes_nothing() {
    let records: Vec<Record> = (0..5)
        .map(|i| record(i, event(u128::from(i) + 1, "s", EventType::LlmRequest, 10)))
        .collect();
    let mut folder = folder_with_loaded(&records);
    let first = folder.fold(records.clone());
    let state = first.sessions[0].clone();

    // A restarted aggregator reloads the rows and sees the same records again.
    let mut restarted = new_folder();
    restarted.add_sessions("proj", &["s".into()], vec![state.clone()]);
    for (group, accounts) in restarted.plan(&records).rows {
        let GroupTable::Usage(granularity) = group.table else {
            continue;
        };
        assert_eq!(accounts, vec!["acct".to_owned()]);
        let rows = if granularity == Granularity::Hour {
            first.usage_hourly.clone()
        } else {
            first.usage_daily.clone()
        };
        restarted.add_usage_rows(granularity, rows);
    }
    let again = restarted.fold(records.clone());
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
    let out = folder.fold(records.clone());
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
    let out = folder.fold(records.clone());
    assert_eq!(out.sessions[0].input_tokens, 10);
}

#[test]
fn a_plan_looks_up_each_table_of_a_project_once_and_keeps_only_what_it_asked_for() {
    let mut on_other_partition = record(1, event(2, "s2", EventType::LlmResponse, 1));
    on_other_partition.partition = 3;
    on_other_partition.envelope.event.account_id = "acct-2".into();
    let records = vec![
        record(0, event(1, "s1", EventType::LlmResponse, 1)),
        on_other_partition,
    ];
    let plan = new_folder().plan(&records);
    let lookups = plan.lookups();
    assert_eq!(lookups.len(), 2, "hourly and daily usage of project proj");
    let hourly = &lookups[&(GroupTable::Usage(Granularity::Hour), "proj".to_owned())];
    assert_eq!(
        (hourly.partitions.clone(), hourly.ids.clone()),
        (vec![0, 3], vec!["acct".to_owned(), "acct-2".to_owned()])
    );
    // The lookup also returns acct on partition 3: a row nobody asked for stays out.
    let out = {
        let mut folder = folder_with_loaded(&records);
        folder.fold(records.clone())
    };
    let asked: Vec<bool> = out
        .usage_hourly
        .iter()
        .map(|row| plan.wants_usage(Granularity::Hour, row))
        .collect();
    assert_eq!(asked, vec![true, true]);
    let mut unasked = out.usage_hourly[0].clone();
    unasked.kafka_partition = 3;
    assert!(!plan.wants_usage(Granularity::Hour, &unasked));
}

#[test]
fn a_plan_leaves_out_rows_known_not_to_exist_and_folded_rows_become_known() {
    let records = vec![
        record(0, event(1, "old", EventType::LlmRequest, 5)),
        record(1, event(2, "new", EventType::LlmRequest, 5)),
    ];
    let mut folder = new_folder();
    // Before anything is known, every uncached row is looked up.
    let plan = folder.plan(&records);
    assert_eq!(plan.sessions["proj"], ["new", "old"]);
    assert_eq!(plan.rows.len(), 2, "the hour's and the day's usage rows");
    assert_eq!(folder.unknown_usage_groups(&records).len(), 2);

    // ClickHouse has session "old" on partition 0, and no usage row in either bucket.
    let hasher = folder.known().hasher().clone();
    let known = HashSet64::from_iter([hasher.session("proj", "old")]);
    folder.load_known_sessions(HashMap::from([(0, known)]));
    for (_, groups) in folder.unknown_usage_groups(&records) {
        folder.load_known_usage(&groups, HashMap::new());
    }
    assert!(folder.unknown_usage_groups(&records).is_empty());
    let plan = folder.plan(&records);
    assert_eq!(
        plan.sessions["proj"],
        ["old"],
        "only the session that may exist"
    );
    assert!(plan.rows.is_empty(), "no usage row can exist yet");

    // A session of another partition is not known either way: it is looked up.
    let elsewhere = Record {
        partition: 1,
        ..record(2, event(3, "new", EventType::LlmRequest, 5))
    };
    assert_eq!(folder.plan(&[elsewhere]).sessions["proj"], ["new"]);

    // Folded rows are known to exist: once out of the cache, they are looked up again.
    load_nothing(&mut folder, &records);
    folder.fold(records.clone());
    folder.forget_rows();
    let plan = folder.plan(&records);
    assert_eq!(plan.sessions["proj"], ["new", "old"]);
    assert_eq!(plan.rows.len(), 2);
}

#[test]
fn a_revoked_or_rebuilt_partition_forgets_what_it_knew() {
    let records = vec![record(0, event(1, "s", EventType::LlmRequest, 5))];
    let mut folder = new_folder();
    folder.load_known_sessions(HashMap::from([(0, HashSet64::default())]));
    for (_, groups) in folder.unknown_usage_groups(&records) {
        folder.load_known_usage(&groups, HashMap::new());
    }
    assert!(folder.plan(&records).sessions.is_empty());
    // A rebuild rewrites the partition's usage rows: their accounts are read again.
    folder.rebuild(0, 10, (0, 1), Vec::new());
    assert_eq!(folder.unknown_usage_groups(&records).len(), 2);
    assert!(
        folder.plan(&records).sessions.is_empty(),
        "sessions stay known"
    );
    folder.forget_partition(0);
    assert_eq!(folder.plan(&records).sessions["proj"], ["s"]);
}
