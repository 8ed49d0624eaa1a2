//! Runs the read-route vectors (`sdk-spec/vectors/read.json`) against a live ingest whose
//! store holds the file's seed, posted through ingest and folded by the aggregator on the real
//! stack. The same file serves the SDKs; see its own `description` for the format.

use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use tally_tests::vectors::{load, matches, Placeholders};
use tally_tests::TestEnv;

/// The read routes, as patterns of the vectors' paths.
const ROUTES: [&str; 8] = [
    "/v1/sessions",
    "/v1/sessions/{id}",
    "/v1/sessions/{id}/timeline",
    "/v1/metrics/summary",
    "/v1/metrics/usage",
    "/v1/metrics/latency",
    "/v1/metrics/tools",
    "/v1/metrics/cost",
];

fn route_of(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    match path.strip_prefix("/v1/sessions/") {
        Some(rest) if rest.ends_with("/timeline") => "/v1/sessions/{id}/timeline".into(),
        Some(_) => "/v1/sessions/{id}".into(),
        None => path.to_owned(),
    }
}

#[test]
fn the_read_vectors_cover_every_read_route_and_error_code() {
    let doc = load("read.json");
    let cases = doc["cases"].as_array().expect("cases");
    let answered: BTreeSet<String> = cases
        .iter()
        .filter(|c| c["expect"]["status"] == 200)
        .map(|c| route_of(c["request"]["path"].as_str().expect("path")))
        .collect();
    let refused: BTreeSet<String> = cases
        .iter()
        .filter(|c| c["expect"]["status"] == 403)
        .map(|c| route_of(c["request"]["path"].as_str().expect("path")))
        .collect();
    for route in ROUTES {
        assert!(answered.contains(route), "no vector reads {route}");
    }
    for route in ROUTES.iter().filter(|r| !r.contains('{')) {
        assert!(
            refused.contains(*route),
            "no vector refuses {route} to an ingest key"
        );
    }
    let codes: BTreeSet<&str> = cases
        .iter()
        .filter_map(|c| c["expect"]["body"]["error"]["code"].as_str())
        .collect();
    for code in [
        "invalid_parameter",
        "invalid_range",
        "invalid_cursor",
        "not_found",
        "forbidden",
        "unauthorized",
    ] {
        assert!(codes.contains(code), "no vector answers {code}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_vector_passes_against_a_seeded_store() {
    let env = TestEnv::start().await;
    let doc = load("read.json");
    let placeholders = Placeholders::new();
    let seed = placeholders.expand(&doc["seed"]);

    let response = env.post_batch(&env.ingest_key_a, &seed["batch"]).await;
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.expect("json");
    let sent = seed["batch"]["batch"].as_array().expect("batch").len();
    assert_eq!(
        answer["accepted"], sent,
        "the seed is accepted whole: {answer}"
    );
    for ready in seed["ready"].as_array().expect("ready") {
        let path = ready["path"].as_str().expect("path");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (status, body) = env.get(&env.read_key_a, path).await;
            if status == 200 && matches(&ready["body"], &body) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the seed was not folded: {path} answers {status} {body}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    let cases = doc["cases"].as_array().expect("cases");
    assert!(cases.len() >= 40, "{} vectors", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let request = placeholders.expand(&case["request"]);
        assert_eq!(request["method"], "GET", "{name}: the read routes are GETs");
        let path = request["path"].as_str().expect("path");
        let mut builder = env.http.get(format!("{}{path}", env.url));
        builder = match request["key"].as_str().expect("key") {
            "read" => builder.bearer_auth(&env.read_key_a),
            "ingest" => builder.bearer_auth(&env.ingest_key_a),
            "other_project" => builder.bearer_auth(&env.key_b),
            "invalid" => builder.bearer_auth("not-a-key"),
            "none" => builder,
            other => panic!("{name}: unknown key {other}"),
        };
        let response = builder.send().await.expect("answered");
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let expect = placeholders.expand(&case["expect"]);
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
