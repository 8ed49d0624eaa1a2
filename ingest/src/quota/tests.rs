#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
//! The quota routes over a hand-filled view and a fake sink (no Kafka).

use crate::auth::{hash_key, KeyConfig, ProjectConfig, Redaction, Scope};
use crate::config::IngestConfig;
use crate::server::Services;
use crate::testing::{app, services, view, FakeSink};
use actix_web::{test as actix_test, web};
use serde_json::{json, Value};
use std::sync::Arc;
use tally_quota::{CounterRecord, PlanLimits, QuotaConfig, QuotaRecord};

fn state(sink: Arc<FakeSink>) -> web::Data<Services> {
    let key = |k: &str, scopes: Vec<Scope>| KeyConfig {
        sha256: hash_key(k),
        scopes,
    };
    let mut quota = QuotaConfig::default();
    quota.plans.get_mut("free").expect("free").limits = PlanLimits {
        tokens_per_day: Some(1000),
        requests_per_minute: Some(3),
        ..PlanLimits::default()
    };
    let config = IngestConfig {
        projects: vec![
            ProjectConfig {
                id: "p".into(),
                keys: vec![
                    key("ingest", vec![Scope::Ingest]),
                    key("read", vec![Scope::Read]),
                    key("admin", vec![Scope::Admin]),
                ],
                redact: Redaction::default(),
            },
            ProjectConfig {
                id: "q".into(),
                keys: vec![key("admin-q", vec![Scope::Admin])],
                redact: Redaction::default(),
            },
        ],
        quota,
        ..IngestConfig::default()
    };
    services(config, sink)
}

async fn call(
    state: &web::Data<Services>,
    method: &str,
    uri: &str,
    key: &str,
    body: Value,
) -> (u16, Value, Option<String>) {
    let app = actix_test::init_service(app(state)).await;
    let request = match method {
        "GET" => actix_test::TestRequest::get(),
        "PUT" => actix_test::TestRequest::put(),
        _ => actix_test::TestRequest::post(),
    }
    .uri(uri)
    .insert_header(("authorization", format!("Bearer {key}")))
    .set_json(body)
    .to_request();
    let response = actix_test::call_service(&app, request).await;
    let status = response.status().as_u16();
    let tightest = response
        .headers()
        .get("x-quota-remaining")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = actix_test::read_body_json(response).await;
    (status, body, tightest)
}

fn used_today(state: &Services, tokens: i64) {
    let now = chrono::Utc::now().timestamp_millis();
    let mut counters = CounterRecord::new("p", "acct", 0);
    counters.add(now, tokens, 0, 0, now);
    view(state).apply(QuotaRecord::Counters(counters));
}

#[actix_web::test]
async fn the_estimate_counts_and_the_answer_names_the_limit() {
    let state = state(Arc::default());
    used_today(&state, 700);
    let check = |tokens| json!({"account_id": "acct", "estimated_tokens": tokens});
    let (status, body, remaining) =
        call(&state, "POST", "/v1/quota/check", "ingest", check(300)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["allowed"], true);
    assert_eq!(body["status"], "exceeded", "700 + 300 reaches 100 %");
    assert_eq!(remaining.as_deref(), Some("300"));
    let (_, body, _) = call(&state, "POST", "/v1/quota/check", "ingest", check(301)).await;
    assert_eq!(body["allowed"], false);
    assert_eq!(body["reason"], "tokens_per_day_exceeded");
    assert_eq!(body["requires_upgrade"], true);
    let day = body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "tokens_per_day")
        .unwrap()
        .clone();
    assert_eq!(
        (day["used"].clone(), day["limit"].clone()),
        (json!(700), json!(1000))
    );
}

#[actix_web::test]
async fn admitted_requests_count_in_this_replicas_minute() {
    let state = state(Arc::default());
    let check = json!({"account_id": "burst"});
    for _ in 0..3 {
        let (_, body, _) = call(&state, "POST", "/v1/quota/check", "ingest", check.clone()).await;
        assert_eq!(body["allowed"], true, "{body}");
    }
    let (_, body, _) = call(&state, "POST", "/v1/quota/check", "ingest", check).await;
    assert_eq!(body["reason"], "requests_per_minute_exceeded");
    assert_eq!(body["requires_upgrade"], false);
}

#[actix_web::test]
async fn bad_checks_are_400_naming_the_field() {
    let state = state(Arc::default());
    for (body, field) in [
        (json!({"estimated_tokens": 1}), "account_id"),
        (json!({"account_id": ""}), "account_id"),
        (
            json!({"account_id": "a", "estimated_tokens": -1}),
            "estimated_tokens",
        ),
        (
            json!({"account_id": "a", "estimated_cost_usd": -1}),
            "estimated_cost_usd",
        ),
        (json!({"account_id": "a", "surprise": 1}), "surprise"),
    ] {
        let (status, answer, _) = call(&state, "POST", "/v1/quota/check", "ingest", body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{message} should name {field}");
    }
}

#[actix_web::test]
async fn admin_routes_need_the_admin_key_of_the_project() {
    let sink: Arc<FakeSink> = Arc::default();
    let state = state(sink.clone());
    let plan = json!({"plan": "pro", "overrides": {"tokens_per_day": 5}});
    let uri = "/v1/admin/accounts/acct";
    assert_eq!(
        call(&state, "PUT", uri, "ingest", plan.clone()).await.0,
        403
    );
    assert_eq!(call(&state, "PUT", uri, "read", plan.clone()).await.0, 403);
    assert_eq!(
        call(&state, "PUT", uri, "nobody", plan.clone()).await.0,
        401
    );
    let (status, body, _) = call(&state, "PUT", uri, "admin", plan).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["limits"]["tokens_per_day"], 5);
    // Project q's admin sees its own account of that name, untouched.
    let (_, other, _) = call(&state, "GET", uri, "admin-q", json!(null)).await;
    assert_eq!(other["plan"], "free");
    let (_, checked, _) = call(
        &state,
        "POST",
        "/v1/quota/check",
        "ingest",
        json!({"account_id": "acct", "estimated_tokens": 6}),
    )
    .await;
    assert_eq!(checked["reason"], "tokens_per_day_exceeded");
    assert_eq!(checked["plan"], "pro");
    let (status, body, _) = call(&state, "PUT", uri, "admin", json!({"plan": "gold"})).await;
    assert_eq!(status, 400);
    assert!(body["error"]["message"].as_str().unwrap().contains("plan"));

    let adjustment = json!({"tokens": -500, "cost_usd": -1.25, "reason": "refund"});
    let (status, body, _) = call(
        &state,
        "POST",
        "/v1/admin/accounts/acct/adjustments",
        "admin",
        adjustment,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let records = sink.records.lock().unwrap();
    let envelope = tally_schema::Envelope::decode(&records[0].payload).expect("envelope");
    assert_eq!(
        envelope.event.event_type,
        tally_schema::EventType::UsageAdjustment
    );
    assert_eq!(envelope.event.provided_cost_nanos, Some(-1_250_000_000));
    assert_eq!(envelope.event.attributes["tokens"], json!(-500));
}

#[actix_web::test]
async fn whole_floats_count_as_integers_and_adjustments_are_bounded() {
    let state = state(Arc::default());
    let (status, body, _) = call(
        &state,
        "POST",
        "/v1/quota/check",
        "ingest",
        json!({"account_id": "a", "estimated_tokens": 5.0}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = call(
        &state,
        "POST",
        "/v1/quota/check",
        "ingest",
        json!({"account_id": "a", "estimated_tokens": 5.5}),
    )
    .await;
    assert_eq!(status, 400);
    let uri = "/v1/admin/accounts/a/adjustments";
    for (body, field) in [
        (
            json!({"tokens": 9_223_372_036_854_775_807_i64, "reason": "x"}),
            "tokens",
        ),
        (
            json!({"cost_usd": 9_223_372_036_u64, "reason": "x"}),
            "cost_usd",
        ),
        (json!({"tokens": 1, "reason": "é".repeat(513)}), "reason"),
    ] {
        let (status, answer, _) = call(&state, "POST", uri, "admin", body).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let (status, _, _) = call(
        &state,
        "POST",
        uri,
        "admin",
        json!({"tokens": -10.0, "reason": "é".repeat(512)}),
    )
    .await;
    assert_eq!(status, 200);
}
