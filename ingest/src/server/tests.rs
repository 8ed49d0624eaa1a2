#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
//! Which routes and which readiness a process has follows its `roles`.

use crate::auth::{hash_key, KeyConfig, ProjectConfig, Redaction, Scope};
use crate::config::{IngestConfig, Role};
use crate::testing::{app, services, FakeSink};
use actix_web::test as actix_test;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

const KEY: &str = "every-scope";

fn config(roles: &[Role]) -> IngestConfig {
    IngestConfig {
        roles: roles.to_vec(),
        projects: vec![ProjectConfig {
            id: "p".into(),
            keys: vec![KeyConfig {
                sha256: hash_key(KEY),
                scopes: vec![Scope::Ingest, Scope::Read, Scope::Admin],
            }],
            redact: Redaction::default(),
        }],
        ..IngestConfig::default()
    }
}

/// (status, body) of each request, on one app of `roles` whose sink is `failing`.
async fn answers(roles: &[Role], failing: bool, requests: &[(&str, &str)]) -> Vec<(u16, Value)> {
    let sink = Arc::new(FakeSink::default());
    sink.failing.store(failing, Ordering::Relaxed);
    let services = services(config(roles), sink);
    let app = actix_test::init_service(app(&services)).await;
    let mut out = Vec::new();
    for (method, uri) in requests {
        let request = match *method {
            "GET" => actix_test::TestRequest::get(),
            _ => actix_test::TestRequest::post(),
        }
        .uri(uri)
        .insert_header(("authorization", format!("Bearer {KEY}")))
        .set_json(body(uri))
        .to_request();
        let response = actix_test::call_service(&app, request).await;
        let status = response.status().as_u16();
        let body =
            serde_json::from_slice(&actix_test::read_body(response).await).unwrap_or(Value::Null);
        out.push((status, body));
    }
    out
}

/// A valid body for each probed route.
fn body(uri: &str) -> Value {
    match uri {
        "/v1/batch" => json!({"batch": [{
            "event_id": "0193a1b2-0000-7000-8000-000000000001",
            "type": "user_message",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "session_id": "s",
            "account_id": "acct",
        }]}),
        "/v1/quota/check" => json!({"account_id": "acct"}),
        _ => Value::Null,
    }
}

const PROBES: [(&str, &str); 4] = [
    ("POST", "/v1/batch"),
    ("POST", "/v1/quota/check"),
    ("GET", "/v1/admin/accounts/acct"),
    ("GET", "/readyz"),
];

#[actix_web::test]
async fn a_family_left_out_answers_404_and_is_not_asked_for_readiness() {
    // Kafka down: the write path is not ready, the quota check (view only) is.
    let statuses = |answers: Vec<(u16, Value)>| answers.iter().map(|a| a.0).collect::<Vec<_>>();
    let quota_only = answers(&[Role::Quota], true, &PROBES).await;
    assert_eq!(statuses(quota_only), [404, 200, 404, 200]);
    let write_only = answers(&[Role::Write], true, &PROBES).await;
    assert_eq!(write_only[0].0, 503, "{:?}", write_only[0].1);
    assert_eq!(write_only[1].0, 404);
    assert_eq!(write_only[2].0, 404);
    assert_eq!(write_only[3].0, 503);
    assert_eq!(write_only[3].1["reason"], "kafka unreachable");
    // Admin publishes adjustments to the events topic: it waits for Kafka too.
    let admin_only = answers(&[Role::Admin], true, &PROBES).await;
    assert_eq!(statuses(admin_only), [404, 404, 200, 503]);
}

#[actix_web::test]
async fn every_family_is_served_by_default() {
    assert_eq!(IngestConfig::default().roles, Role::ALL);
    let all = answers(&Role::ALL, false, &PROBES).await;
    assert_eq!(
        all.iter().map(|a| a.0).collect::<Vec<_>>(),
        [200, 200, 200, 200],
        "{all:?}"
    );
}

#[test]
fn roles_are_checked_when_the_configuration_is_read() {
    let mut none = IngestConfig::default();
    none.roles.clear();
    assert!(none.validate().unwrap_err().contains("roles"));
    let parsed = serde_json::from_value::<IngestConfig>(json!({"roles": ["writer"]}));
    let err = parsed.unwrap_err().to_string();
    assert!(err.contains("writer"), "{err}");
    let parsed: IngestConfig = serde_json::from_value(json!({"roles": ["read", "quota"]})).unwrap();
    assert_eq!(parsed.roles, [Role::Read, Role::Quota]);
}

/// The quota check's and the admin routes' bodies are small JSON objects: past
/// `SMALL_BODY_LIMIT` they get Tally's 413 (a JSON error with its code), compressed or not.
#[actix_web::test]
async fn small_json_bodies_past_their_limit_get_a_tally_413() {
    let services = services(config(&Role::ALL), Arc::new(FakeSink::default()));
    let app = actix_test::init_service(app(&services)).await;
    let padding = "x".repeat(crate::body::SMALL_BODY_LIMIT);
    let cases = [
        (
            "POST",
            "/v1/quota/check",
            json!({"account_id": "acct", "operation": padding}),
        ),
        ("PUT", "/v1/admin/accounts/acct", json!({"plan": padding})),
        (
            "POST",
            "/v1/admin/accounts/acct/adjustments",
            json!({"tokens": 1, "reason": padding}),
        ),
    ];
    for (method, uri, body) in cases {
        for gzip in [false, true] {
            let raw = serde_json::to_vec(&body).unwrap();
            let mut request = match method {
                "PUT" => actix_test::TestRequest::put(),
                _ => actix_test::TestRequest::post(),
            }
            .uri(uri)
            .insert_header(("authorization", format!("Bearer {KEY}")))
            .insert_header(("content-type", "application/json"));
            let sent = if gzip {
                use std::io::Write;
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&raw).unwrap();
                request = request.insert_header(("content-encoding", "gzip"));
                encoder.finish().unwrap()
            } else {
                raw
            };
            let response =
                actix_test::call_service(&app, request.set_payload(sent).to_request()).await;
            let status = response.status().as_u16();
            let answer: Value = serde_json::from_slice(&actix_test::read_body(response).await)
                .unwrap_or(Value::Null);
            assert_eq!(status, 413, "{method} {uri} gzip={gzip}: {answer}");
            assert_eq!(
                answer["error"]["code"], "payload_too_large",
                "{method} {uri}: {answer}"
            );
        }
    }
}
