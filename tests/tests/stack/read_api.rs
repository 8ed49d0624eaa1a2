//! The read API on the real stack: a seeded workload spread over four days goes through
//! ingest, Kafka and the aggregator; then every read route's answer is compared with the
//! ground truth computed here from the events sent (`tally_tests::read_truth`): exact for
//! counts, tokens and cost, percentiles within their histogram bucket. Also: tenant isolation,
//! the read scope, bad parameters, timeline ties, and cursor pages.

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde_json::{json, Value};
use std::time::Duration;
use tally_schema::event::Event;
use tally_tests::read_truth::{exact_percentile, Filter, SessionTruth, Span, Truth, PERCENTILES};
use tally_tests::workload::{batch_body, Workload};
use tally_tests::TestEnv;

const WAIT: Duration = Duration::from_secs(90);
const HOUR: (i64, i64) = (3_600, 0);
const DAY: (i64, i64) = (86_400, 0);
/// ISO weeks: the epoch was a Thursday; Mondays are 4 days later.
const WEEK: (i64, i64) = (7 * 86_400, 4 * 86_400);

fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .expect("a time")
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `expected` as it reads after a trip through JSON text, as the answer made it: serde_json's
/// float parsing may land one ulp off the value that was written, the same way on both sides.
fn as_received(expected: &Value) -> Value {
    serde_json::from_str(&expected.to_string()).expect("JSON")
}

fn parse(events: &[Value]) -> Vec<Event> {
    events
        .iter()
        .map(|e| serde_json::from_value(e.clone()).expect("the workload builds valid events"))
        .collect()
}

/// Sessions spread over the last 80 hours, billed to four accounts (the same names in every
/// project).
fn workload(seed: u64, sessions: i64, now: DateTime<Utc>) -> Vec<Value> {
    let mut workload = Workload::new(seed, now);
    let mut events = Vec::new();
    for i in 0..sessions {
        workload.set_start(
            now - ChronoDuration::hours(80) + ChronoDuration::minutes(i * 4_700 / sessions),
        );
        let account = format!("acct-{}", i % 4);
        events.extend(workload.session(i as usize, &account));
    }
    events
}

/// One session whose events all share a millisecond, with a failed tool result.
fn tied_session(at_ms: i64) -> Vec<Value> {
    let at = rfc3339(at_ms);
    let base = |kind: &str| {
        json!({"event_id": uuid::Uuid::new_v4().to_string(), "type": kind, "timestamp": at,
               "session_id": "ties", "account_id": "acct-ties", "operation": "conversation"})
    };
    let mut request = base("llm_request");
    request["model"] = json!("gpt-4o");
    request["provider"] = json!("openai");
    let mut response = request.clone();
    response["event_id"] = json!(uuid::Uuid::new_v4().to_string());
    response["type"] = json!("llm_response");
    response["usage"] = json!({"input_tokens": 900, "output_tokens": 80, "cache_read_tokens": 300, "cache_write_tokens": 0});
    response["duration_ms"] = json!(1234);
    response["time_to_first_token_ms"] = json!(201);
    let mut call = base("tool_call");
    call["tool"] = json!({"name": "web_search", "call_id": "c-1"});
    let mut result = base("tool_result");
    result["tool"] = json!({"name": "web_search", "call_id": "c-1"});
    result["status"] = json!("error");
    result["duration_ms"] = json!(50);
    vec![
        base("session_start"),
        base("user_message"),
        request,
        response,
        call,
        result,
    ]
}

/// Polls `path` until the answer's `events` reaches `events`.
async fn wait_for_events(env: &TestEnv, key: &str, path: &str, events: usize) {
    env.poll(key, path, WAIT, |body| body["events"] == json!(events))
        .await;
}

/// Each percentile of `answer` (a latency block) lies within the stated tolerance of the
/// exact nearest-rank percentile of `values`.
fn assert_within_tolerance(answer: &Value, values: &[u64], what: &str) {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    for (name, q) in PERCENTILES {
        let exact = exact_percentile(&sorted, q);
        let got = answer[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{what} {name}: {answer}"));
        assert!(
            got >= exact && got as f64 <= exact as f64 * 1.155,
            "{what} {name}: {got} ms against exactly {exact} ms"
        );
    }
}

struct Routes<'a> {
    env: &'a TestEnv,
    key: &'a str,
}

impl Routes<'_> {
    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.env.get(self.key, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Every page of the sessions list, `limit` at a time.
    async fn all_pages(&self, query: &str, limit: usize) -> Vec<Value> {
        let mut sessions = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..100 {
            let mut path = format!("/v1/sessions?{query}&limit={limit}");
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = self.ok(&path).await;
            let items = page["sessions"].as_array().expect("sessions");
            assert!(items.len() <= limit, "{path}");
            sessions.extend(items.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return sessions,
            }
        }
        panic!("the sessions list did not end");
    }
}

fn described(list: &[SessionTruth]) -> Vec<Value> {
    list.iter()
        .map(|s| {
            json!({"session_id": s.session_id, "account_id": s.account_id,
                   "started_at": rfc3339(s.started_ms), "event_count": s.event_count,
                   "status": if s.failed { "error" } else { "ok" }})
        })
        .collect()
}

fn described_answer(list: &[Value]) -> Vec<Value> {
    list.iter()
        .map(|s| {
            json!({"session_id": s["session_id"], "account_id": s["account_id"],
                   "started_at": s["started_at"], "event_count": s["event_count"],
                   "status": s["status"]})
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_route_agrees_with_the_ground_truth() {
    let env = TestEnv::start().await;
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let mut sent_a = workload(41, 24, now);
    let mut ties = tied_session(now_ms - 2 * 3_600_000);
    sent_a.extend(ties.clone());
    let sent_b = workload(42, 5, now);

    // The ingest-only key posts; the tied session's events go in shuffled, twice.
    ties.shuffle(&mut rand::rngs::StdRng::seed_from_u64(3));
    for (key, body) in [
        (&env.ingest_key_a, batch_body(&sent_a)),
        (&env.ingest_key_a, batch_body(&ties)),
        (&env.key_b, batch_body(&sent_b)),
    ] {
        let response = env.post_batch(key, &body).await;
        assert_eq!(response.status(), 200);
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["rejected"], json!([]), "{answer}");
    }
    // A credit through the admin API: an event of its own session, priced at its amount.
    let response = env
        .http
        .post(format!("{}/v1/admin/accounts/acct-1/adjustments", env.url))
        .bearer_auth(&env.admin_key_a)
        .json(&json!({"tokens": -500, "cost_usd": -0.25, "reason": "goodwill credit"}))
        .send()
        .await
        .expect("answered");
    assert_eq!(response.status(), 200, "{:?}", response.text().await);

    let (from_ms, to_ms) = (now_ms - 4 * 86_400_000, now_ms + 3_600_000);
    let full = format!("from={}&to={}", rfc3339(from_ms), rfc3339(to_ms));
    let a = Routes {
        env: &env,
        key: &env.read_key_a,
    };
    let b = Routes {
        env: &env,
        key: &env.key_b,
    };
    // The adjustment's event as the raw store holds it joins the ground truth.
    let adjustments = env
        .poll(
            a.key,
            "/v1/sessions/tally-usage-adjustments/timeline",
            WAIT,
            |body| body["events"].as_array().is_some_and(|e| e.len() == 1),
        )
        .await;
    let mut events_a = parse(&sent_a);
    events_a.extend(parse(adjustments["events"].as_array().expect("events")));
    assert_eq!(
        events_a.last().map(|e| e.event_type),
        Some(tally_schema::event::EventType::UsageAdjustment)
    );
    let truth_a = Truth::new(events_a);
    let truth_b = Truth::new(parse(&sent_b));
    wait_for_events(
        &env,
        a.key,
        &format!("/v1/metrics/summary?{full}"),
        sent_a.len() + 1,
    )
    .await;
    wait_for_events(
        &env,
        b.key,
        &format!("/v1/metrics/summary?{full}"),
        sent_b.len(),
    )
    .await;
    // Within a fold the aggregator writes the tool rollup last: once it is complete, so is
    // everything else.
    let full_hours = Span::aligned(from_ms, to_ms, HOUR.0, HOUR.1);
    let tools = truth_a.tools(full_hours);
    let path = format!("/v1/metrics/tools?{full}");
    let deadline = std::time::Instant::now() + WAIT;
    while a.ok(&path).await["tools"] != as_received(&tools) && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        a.ok(&path).await["tools"],
        as_received(&tools),
        "the tool rollup is complete"
    );

    // A range that cuts through the data, on hour boundaries it is widened to.
    let (cut_from, cut_to) = (
        now_ms - 50 * 3_600_000 - 17 * 60_000,
        now_ms - 3 * 3_600_000 + 300_000,
    );
    let cut = format!("from={}&to={}", rfc3339(cut_from), rfc3339(cut_to));
    let cut_hours = Span::aligned(cut_from, cut_to, HOUR.0, HOUR.1);
    let none = Filter::default();
    let account = |id: &str| Filter {
        account_id: Some(id.into()),
        ..Filter::default()
    };
    let model = |id: &str| Filter {
        model: Some(id.into()),
        ..Filter::default()
    };

    // Summary.
    for (query, span, filter) in [
        (full.clone(), full_hours, none.clone()),
        (cut.clone(), cut_hours, none.clone()),
        (
            format!("{cut}&account_id=acct-1"),
            cut_hours,
            account("acct-1"),
        ),
        (format!("{full}&model=gpt-4o"), full_hours, model("gpt-4o")),
    ] {
        let answer = a.ok(&format!("/v1/metrics/summary?{query}")).await;
        assert_eq!(
            answer,
            as_received(&truth_a.summary(span, &filter)),
            "summary?{query}"
        );
    }
    let summary = a.ok(&format!("/v1/metrics/summary?{full}")).await;
    assert!(summary["sessions"].as_u64() > Some(20) && summary["errors"].as_u64() > Some(0));
    assert_eq!(
        summary["adjusted_tokens"],
        json!(-500),
        "the credit is in the summary"
    );

    // Usage over time.
    let model_and_operation = Filter {
        model: Some("gpt-4o".into()),
        operation: Some("summarize".into()),
        ..Filter::default()
    };
    for (query, (from, to), (step, offset), group, filter) in [
        (
            format!("{cut}&granularity=hour&group_by=model"),
            (cut_from, cut_to),
            HOUR,
            Some("model"),
            none.clone(),
        ),
        (
            format!("{full}&granularity=day&group_by=account"),
            (from_ms, to_ms),
            DAY,
            Some("account"),
            none.clone(),
        ),
        (
            format!("{full}&granularity=week&group_by=operation"),
            (from_ms, to_ms),
            WEEK,
            Some("operation"),
            none.clone(),
        ),
        (
            format!("{cut}&operation=summarize&model=gpt-4o"),
            (cut_from, cut_to),
            HOUR,
            None,
            model_and_operation,
        ),
    ] {
        let span = Span::aligned(from, to, step, offset);
        let granularity = match step {
            3_600 => "hour",
            86_400 => "day",
            _ => "week",
        };
        let expected = json!({
            "from": time_json(span.from),
            "to": time_json(span.to),
            "granularity": granularity,
            "group_by": group,
            "points": truth_a.usage_points(span, (step, offset), group, &filter),
        });
        let answer = a.ok(&format!("/v1/metrics/usage?{query}")).await;
        assert_eq!(answer, as_received(&expected), "usage?{query}");
    }

    // Latency percentiles: the bucket of the exact value, within the stated tolerance.
    for (query, span, filter) in [
        (full.clone(), full_hours, none.clone()),
        (
            format!("{cut}&model=claude-sonnet-4-5"),
            cut_hours,
            model("claude-sonnet-4-5"),
        ),
    ] {
        let answer = a.ok(&format!("/v1/metrics/latency?{query}")).await;
        let mut expected = truth_a.latency(span, &filter);
        expected["from"] = time_json(span.from);
        expected["to"] = time_json(span.to);
        expected["accuracy"] = json!({"averages": "exact", "percentiles": "bucket_upper_bound", "percentile_max_overestimate": 0.155});
        assert_eq!(answer, as_received(&expected), "latency?{query}");
        let latencies = truth_a.latencies(span, &filter);
        for (index, (name, (durations, ttfts))) in latencies.iter().enumerate() {
            let entry = &answer["by_model"][index];
            assert_eq!(entry["model"], json!(name));
            assert_within_tolerance(&entry["duration"], durations, name);
            assert_within_tolerance(&entry["time_to_first_token"], ttfts, name);
        }
        let all: Vec<u64> = latencies.values().flat_map(|(d, _)| d.clone()).collect();
        assert_within_tolerance(&answer["overall"]["duration"], &all, "overall");
    }

    // Tools.
    let answer = a.ok(&format!("/v1/metrics/tools?{full}")).await;
    assert_eq!(answer["tools"], as_received(&tools), "tools");
    assert_eq!(
        (answer["from"].clone(), answer["to"].clone()),
        (time_json(full_hours.from), time_json(full_hours.to))
    );
    let web_search = tools
        .as_array()
        .expect("tools")
        .iter()
        .find(|t| t["tool"] == "web_search")
        .expect("web_search");
    assert!(
        web_search["errors"].as_u64() >= Some(1),
        "the tied session's failed result counts"
    );
    let answer = a
        .ok(&format!("/v1/metrics/tools?{full}&tool=calendar"))
        .await;
    let calendar: Vec<Value> = tools
        .as_array()
        .expect("tools")
        .iter()
        .filter(|t| t["tool"] == "calendar")
        .cloned()
        .collect();
    assert_eq!(answer["tools"], as_received(&json!(calendar)));

    // Cost.
    for (query, span, filter, limit) in [
        (full.clone(), full_hours, none.clone(), 100),
        (format!("{cut}&limit=2"), cut_hours, none.clone(), 2),
        (
            format!("{full}&account_id=acct-2"),
            full_hours,
            account("acct-2"),
            100,
        ),
    ] {
        let answer = a.ok(&format!("/v1/metrics/cost?{query}")).await;
        assert_eq!(
            answer,
            as_received(&truth_a.cost(span, &filter, limit)),
            "cost?{query}"
        );
    }

    // Sessions list: every page in order, and each filter.
    let all = a.all_pages(&full, 7).await;
    assert_eq!(
        described_answer(&all),
        described(&truth_a.session_list(from_ms, to_ms, |_| true))
    );
    for (query, keep) in [
        (
            "status=error",
            Box::new(|s: &SessionTruth| s.failed) as Box<dyn Fn(&SessionTruth) -> bool>,
        ),
        ("status=ok", Box::new(|s: &SessionTruth| !s.failed)),
        (
            "account_id=acct-1",
            Box::new(|s: &SessionTruth| s.account_id == "acct-1"),
        ),
        (
            "model=claude-sonnet-4-5",
            Box::new(|s: &SessionTruth| s.models.contains("claude-sonnet-4-5")),
        ),
    ] {
        let answer = a.all_pages(&format!("{full}&{query}"), 500).await;
        let expected = truth_a.session_list(from_ms, to_ms, keep);
        assert!(!expected.is_empty(), "{query} selects something");
        assert_eq!(
            described_answer(&answer),
            described(&expected),
            "sessions?{query}"
        );
    }
    let cut_list = a.all_pages(&cut, 5).await;
    assert_eq!(
        described_answer(&cut_list),
        described(&truth_a.session_list(cut_from, cut_to, |_| true))
    );

    // The timeline of the tied session: one copy of each event, in event_id order.
    let timeline = a.ok("/v1/sessions/ties/timeline").await;
    let ids: Vec<&str> = timeline["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["event_id"].as_str().expect("id"))
        .collect();
    let mut expected: Vec<&str> = tied_session_ids(&sent_a);
    expected.sort_unstable();
    assert_eq!(ids, expected);

    // Tenant isolation: b sees exactly its own data, though its accounts have the same names.
    let answer = b.ok(&format!("/v1/metrics/summary?{full}")).await;
    assert_eq!(answer, as_received(&truth_b.summary(full_hours, &none)));
    let b_list = b.all_pages(&full, 500).await;
    assert_eq!(
        described_answer(&b_list),
        described(&truth_b.session_list(from_ms, to_ms, |_| true))
    );
    let answer = b
        .ok(&format!("/v1/metrics/cost?{full}&account_id=acct-1"))
        .await;
    assert_eq!(
        answer,
        as_received(&truth_b.cost(full_hours, &account("acct-1"), 100))
    );
    let (status, _) = env.get(&env.key_b, "/v1/sessions/ties/timeline").await;
    assert_eq!(status, 404);

    // Only read keys read.
    for path in [
        "/v1/sessions",
        "/v1/metrics/summary",
        "/v1/metrics/usage",
        "/v1/metrics/latency",
        "/v1/metrics/tools",
        "/v1/metrics/cost",
    ] {
        let (status, body) = env.get(&env.ingest_key_a, path).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &json!("forbidden")),
            "{path}"
        );
    }

    // Bad parameters: a 400 naming the parameter, from the live server.
    for (path, parameter) in [
        ("/v1/sessions?limit=0", "limit"),
        ("/v1/sessions?status=broken", "status"),
        ("/v1/metrics/usage?granularity=minute", "granularity"),
        ("/v1/metrics/usage?group_by=session", "group_by"),
        ("/v1/metrics/summary?from=2026-02-30T00:00:00Z", "from"),
        ("/v1/metrics/cost?currency=eur", "currency"),
    ] {
        let (status, body) = env.get(&env.read_key_a, path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["error"]["parameter"], parameter, "{path}: {body}");
    }
    env.finish().await;
}

fn time_json(secs: i64) -> Value {
    json!(tally_schema::event::Timestamp(secs * 1000))
}

fn tied_session_ids(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e["session_id"] == "ties")
        .map(|e| e["event_id"].as_str().expect("id"))
        .collect()
}
