//! Bad input at the HTTP edge: each gets the right status and a body naming the problem,
//! and the good events next to a bad one still go through. Runs against real Kafka.

use chrono::{Duration as ChronoDuration, Utc};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use serde_json::{json, Value};
use std::io::Write;
use tally_tests::env::Options;
use tally_tests::workload::{batch_body, Workload};
use tally_tests::TestEnv;

async fn edge_env() -> TestEnv {
    TestEnv::start_with(Options {
        max_body_bytes: Some(64 * 1024),
        max_batch_events: Some(50),
        without_aggregator: true,
        ..Options::default()
    })
    .await
}

fn events(n: usize) -> Vec<Value> {
    let mut all = Workload::new(3, Utc::now() - ChronoDuration::minutes(10)).sessions(10, 2);
    all.truncate(n);
    all
}

/// Posts raw bytes; returns status, the error code (or the whole body) and the request id.
async fn post_raw(
    env: &TestEnv,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, Value, bool) {
    let mut request = env.http.post(format!("{}/v1/batch", env.url)).body(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("answered");
    let status = response.status().as_u16();
    let has_request_id = response.headers().contains_key("x-request-id");
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        has_request_id,
    )
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_get_a_named_4xx() {
    let env = edge_env().await;
    let good = serde_json::to_vec(&batch_body(&events(5))).expect("json");
    let too_many = serde_json::to_vec(&batch_body(&events(60))).expect("json");
    let mut huge = events(1);
    huge[0]["content"] = json!("x".repeat(70 * 1024));
    let huge = serde_json::to_vec(&batch_body(&huge)).expect("json");
    let bomb = gzip(&vec![b' '; 8 * 1024 * 1024]);

    let key = Some(env.key_a.as_str());
    type Case<'a> = (
        &'a str,
        Option<&'a str>,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "not JSON",
            key,
            vec![JSON],
            b"{\"batch\": [".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "not an object",
            key,
            vec![JSON],
            b"[1, 2]".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "batch missing",
            key,
            vec![JSON],
            b"{\"events\": []}".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "batch wrong type",
            key,
            vec![JSON],
            b"{\"batch\": \"x\"}".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "empty batch",
            key,
            vec![JSON],
            b"{\"batch\": []}".to_vec(),
            400,
            "invalid_batch",
        ),
        (
            "no key",
            None,
            vec![JSON],
            good.clone(),
            401,
            "unauthorized",
        ),
        (
            "unknown key",
            Some("nope"),
            vec![JSON],
            good.clone(),
            401,
            "unauthorized",
        ),
        (
            "read-only key",
            Some(env.read_key_a.as_str()),
            vec![JSON],
            good.clone(),
            403,
            "forbidden",
        ),
        (
            "body too large",
            key,
            vec![JSON],
            huge,
            413,
            "payload_too_large",
        ),
        (
            "too many events",
            key,
            vec![JSON],
            too_many,
            413,
            "payload_too_large",
        ),
        (
            "gzip bomb",
            key,
            vec![JSON, ("content-encoding", "gzip")],
            bomb,
            413,
            "payload_too_large",
        ),
        (
            "bad gzip",
            key,
            vec![JSON, ("content-encoding", "gzip")],
            good.clone(),
            400,
            "invalid_encoding",
        ),
        (
            "unknown encoding",
            key,
            vec![JSON, ("content-encoding", "br")],
            good.clone(),
            415,
            "unsupported_media_type",
        ),
        (
            "form content type",
            key,
            vec![("content-type", "application/x-www-form-urlencoded")],
            good.clone(),
            415,
            "unsupported_media_type",
        ),
    ];
    for (name, key, headers, body, status, code) in cases {
        let (got_status, body, has_request_id) = post_raw(&env, key, &headers, body).await;
        assert_eq!(got_status, status, "{name}: {body}");
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "{name}: the message explains");
        assert!(has_request_id, "{name}: X-Request-Id");
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_are_accepted() {
    let env = edge_env().await;
    let body = serde_json::to_vec(&batch_body(&events(8))).expect("json");
    let encoded = [
        ("gzip", gzip(&body)),
        ("zstd", zstd::encode_all(body.as_slice(), 3).expect("zstd")),
    ];
    for (encoding, bytes) in encoded {
        let response = env
            .http
            .post(format!("{}/v1/batch", env.url))
            .bearer_auth(&env.key_a)
            .header(CONTENT_TYPE, "application/json")
            .header(CONTENT_ENCODING, encoding)
            .body(bytes)
            .send()
            .await
            .expect("answered");
        assert_eq!(response.status(), 200, "{encoding}");
        let answer: Value = response.json().await.expect("json");
        assert_eq!(answer["accepted"], 8, "{encoding}: {answer}");
    }
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_events_are_named_and_the_rest_accepted() {
    let env = edge_env().await;
    let mut batch = events(10);
    let tamper: Vec<(usize, &str, Value)> = vec![
        (1, "session_id", Value::Null),
        (3, "timestamp", json!(12345)),
        (5, "type", json!("llm_thought")),
        (
            7,
            "timestamp",
            json!((Utc::now() + ChronoDuration::days(3)).to_rfc3339()),
        ),
    ];
    for (index, field, value) in &tamper {
        if value.is_null() {
            batch[*index]
                .as_object_mut()
                .expect("object")
                .remove(*field);
        } else {
            batch[*index][*field] = value.clone();
        }
    }
    let response = env.post_batch(&env.key_a, &batch_body(&batch)).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    assert_eq!(answer["accepted"], 6);
    let got: Vec<(u64, String, String)> = answer["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            assert_eq!(
                r["event_id"],
                batch[r["index"].as_u64().expect("index") as usize]["event_id"]
            );
            (
                r["index"].as_u64().expect("index"),
                r["code"].as_str().expect("code").into(),
                r["field"].as_str().expect("field").into(),
            )
        })
        .collect();
    let expected = vec![
        (1, "missing_field".into(), "session_id".into()),
        (3, "invalid_type".into(), "timestamp".into()),
        (5, "unknown_event_type".into(), "type".into()),
        (7, "timestamp_in_future".into(), "timestamp".into()),
    ];
    assert_eq!(got, expected);
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_answer() {
    let env = edge_env().await;
    assert_eq!(
        env.post_batch(&env.key_a, &batch_body(&events(3)))
            .await
            .status(),
        200
    );
    let healthz = env
        .http
        .get(format!("{}/healthz", env.url))
        .send()
        .await
        .expect("answered");
    assert_eq!(healthz.status(), 200);
    let metrics = env
        .http
        .get(format!("{}/metrics", env.url))
        .send()
        .await
        .expect("answered");
    let text = metrics.text().await.expect("text");
    assert!(
        text.contains("tally_ingest_events_total{outcome=\"accepted\",reason=\"\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("tally_ingest_http_requests_total{route=\"/v1/batch\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tally_ingest_kafka_producer_queue_messages 0"),
        "{text}"
    );
    tally_tests::env::promtool_check_metrics(&text).expect("promtool accepts ingest's metrics");
    let (status, body) = env.get(&env.key_a, "/v1/nowhere").await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_rate_limited_with_headers_on_every_answer() {
    let env = TestEnv::start_with(Options {
        without_aggregator: true,
        rate_limit: Some(tally_ingest::ratelimit::RateLimitConfig {
            requests_per_second: 0.2,
            request_burst: 2.0,
            events_per_second: 0.0,
            event_burst: 0.0,
        }),
        ..Options::default()
    })
    .await;
    let body = batch_body(&events(2));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let response = env.post_batch(&env.key_a, &body).await;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        assert_eq!(header("x-ratelimit-limit").as_deref(), Some("2"));
        assert!(header("x-ratelimit-reset").is_some());
        remaining.push((
            response.status().as_u16(),
            header("x-ratelimit-remaining"),
            header("retry-after"),
        ));
    }
    assert_eq!(remaining[0], (200, Some("1".into()), None));
    assert_eq!(remaining[1], (200, Some("0".into()), None));
    assert_eq!(remaining[2].0, 429);
    assert_eq!(
        remaining[2].2.as_deref(),
        Some("5"),
        "one token comes back in 5 s"
    );
    // Another project's key is not affected.
    assert_eq!(env.post_batch(&env.key_b, &body).await.status(), 200);
    // Reads, quota checks and admin routes are limited too, each group in a bucket of its
    // own: the key's empty write bucket does not stop its reads.
    for (key, method, path) in [
        (&env.key_a, "GET", "/v1/sessions/missing"),
        (&env.key_a, "POST", "/v1/quota/check"),
        (&env.admin_key_a, "GET", "/v1/admin/accounts/acct-1"),
    ] {
        let mut answers = Vec::new();
        for _ in 0..3 {
            let request = match method {
                "GET" => env.http.get(format!("{}{path}", env.url)),
                _ => env
                    .http
                    .post(format!("{}{path}", env.url))
                    .json(&json!({"account_id": "acct-1"})),
            };
            let response = request.bearer_auth(key).send().await.expect("answered");
            let remaining = response
                .headers()
                .get("x-ratelimit-remaining")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            answers.push((response.status().as_u16() == 429, remaining));
        }
        assert_eq!(
            answers,
            vec![
                (false, Some("1".into())),
                (false, Some("0".into())),
                (true, Some("0".into()))
            ],
            "{path}"
        );
    }
    env.finish().await;
}
