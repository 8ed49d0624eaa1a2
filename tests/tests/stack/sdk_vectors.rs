//! Runs the write-path vectors (`sdk-spec/vectors/batch.json`) against a live ingest on real
//! Kafka. The same file serves the SDKs; see its own `description` for the format. The quota
//! vectors (`quota.json`) need plans and folded usage; `tests/python/test_quota_vectors.py`
//! runs them.

use chrono::{Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use tally_schema::validate::RejectCode;
use tally_tests::env::Options;
use tally_tests::TestEnv;

fn vectors() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk-spec/vectors/batch.json");
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("valid JSON");
    doc["cases"].as_array().expect("cases").clone()
}

/// Expands `{{…}}` placeholders.
fn expand(value: &Value) -> Value {
    match value {
        Value::String(s) if s.starts_with("{{") && s.ends_with("}}") => {
            placeholder(&s[2..s.len() - 2])
        }
        Value::Array(items) => Value::Array(items.iter().map(expand).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), expand(v))).collect())
        }
        other => other.clone(),
    }
}

fn placeholder(spec: &str) -> Value {
    if let Some(rest) = spec.strip_prefix("now") {
        let offset = if rest.is_empty() {
            ChronoDuration::zero()
        } else {
            let (sign, amount) = rest.split_at(1);
            let (number, unit) = amount.split_at(amount.len() - 1);
            let n: i64 = number.parse().expect("a number");
            let d = match unit {
                "d" => ChronoDuration::days(n),
                "h" => ChronoDuration::hours(n),
                "m" => ChronoDuration::minutes(n),
                other => panic!("unknown unit {other}"),
            };
            if sign == "-" {
                -d
            } else {
                d
            }
        };
        return json!((Utc::now() + offset).to_rfc3339_opts(SecondsFormat::Millis, true));
    }
    if let Some(rest) = spec.strip_prefix("repeat:") {
        let (text, count) = rest.rsplit_once(':').expect("repeat:C:N");
        return json!(text.repeat(count.parse().expect("count")));
    }
    if let Some(count) = spec.strip_prefix("events:") {
        let n: usize = count.parse().expect("count");
        let events: Vec<Value> = (0..n)
            .map(|i| {
                json!({"event_id": uuid::Uuid::from_u128(i as u128 + 1).to_string(), "type": "custom",
                       "timestamp": placeholder("now-1m"), "session_id": "s", "account_id": "a"})
            })
            .collect();
        return Value::Array(events);
    }
    panic!("unknown placeholder {spec}");
}

/// `expected` is a subset of `actual`: keys given must match, arrays have equal length, "*" is anything.
fn matches(expected: &Value, actual: &Value) -> bool {
    match (expected, actual) {
        (Value::String(s), _) if s == "*" => true,
        (Value::Object(e), Value::Object(a)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| matches(v, av))),
        (Value::Array(e), Value::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(ev, av)| matches(ev, av))
        }
        (e, a) => e == a,
    }
}

fn collect_codes(value: &Value, codes: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(code)) = map.get("code") {
                codes.insert(code.clone());
            }
            map.values().for_each(|v| collect_codes(v, codes));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_codes(v, codes)),
        _ => {}
    }
}

#[test]
fn the_vectors_cover_every_rejection_code() {
    let mut codes = BTreeSet::new();
    for case in vectors() {
        collect_codes(&case["expect"], &mut codes);
    }
    let all = [
        RejectCode::NotAnObject,
        RejectCode::MissingField,
        RejectCode::InvalidType,
        RejectCode::InvalidValue,
        RejectCode::TooLong,
        RejectCode::UnknownEventType,
        RejectCode::DuplicateEventId,
        RejectCode::EventTooLarge,
        RejectCode::TimestampInFuture,
        RejectCode::TimestampTooOld,
    ];
    for code in all {
        assert!(
            codes.contains(code.as_str()),
            "no vector rejects with {}",
            code.as_str()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_vector_passes_against_a_live_ingest() {
    let env = TestEnv::start_with(Options {
        without_aggregator: true,
        ..Options::default()
    })
    .await;
    let mut failures = Vec::new();
    let cases = vectors();
    assert!(cases.len() >= 40, "{} vectors", cases.len());
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let request = &case["request"];
        let mut body = match request.get("raw") {
            Some(Value::String(raw)) => raw.clone().into_bytes(),
            _ => serde_json::to_vec(&expand(&request["body"])).expect("json"),
        };
        let mut builder = env.http.post(format!(
            "{}{}",
            env.url,
            request["path"].as_str().expect("path")
        ));
        builder = match request["key"].as_str().expect("key") {
            "ingest" => builder.bearer_auth(&env.key_a),
            "read" => builder.bearer_auth(&env.read_key_a),
            "invalid" => builder.bearer_auth("not-a-key"),
            _ => builder,
        };
        let sets_content_type = request
            .get("headers")
            .and_then(|h| h.get("content-type"))
            .is_some();
        if !sets_content_type {
            builder = builder.header("content-type", "application/json");
        }
        match request.get("encoding").and_then(Value::as_str) {
            Some("gzip") => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&body).expect("gzip");
                body = encoder.finish().expect("gzip");
                builder = builder.header("content-encoding", "gzip");
            }
            Some("zstd") => {
                body = zstd::encode_all(body.as_slice(), 3).expect("zstd");
                builder = builder.header("content-encoding", "zstd");
            }
            _ => {}
        }
        if let Some(Value::Object(headers)) = request.get("headers") {
            for (name, value) in headers {
                builder = builder.header(name.as_str(), value.as_str().expect("header value"));
            }
        }
        let response = builder.body(body).send().await.expect("answered");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let expect = &case["expect"];
        if u64::from(status) != expect["status"].as_u64().expect("status") {
            failures.push(format!(
                "{name}: status {status}, wanted {}: {answer}",
                expect["status"]
            ));
        } else if let Some(expected) = expect.get("body") {
            if !matches(expected, &answer) {
                failures.push(format!("{name}: body {answer} does not match {expected}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    env.finish().await;
}
