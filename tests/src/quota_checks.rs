//! Helpers of the quota stack tests: plans with one limit, LLM responses, checks and polls.

use crate::workload::batch_body;
use crate::TestEnv;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tally_quota::{PlanLimits, QuotaConfig};

/// Plans with one limit each, so every answer is about that limit.
pub fn quota(tokens_per_day: u64) -> QuotaConfig {
    let mut config = QuotaConfig::default();
    for plan in config.plans.values_mut() {
        plan.limits = PlanLimits {
            tokens_per_day: Some(tokens_per_day),
            ..PlanLimits::default()
        };
    }
    config
}

pub fn response(account: &str, tokens: u64) -> Value {
    json!({
        "event_id": uuid::Uuid::new_v4().to_string(),
        "type": "llm_response",
        "timestamp": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        "session_id": format!("s-{}", uuid::Uuid::new_v4().simple()),
        "account_id": account,
        "model": "gpt-4o-mini",
        "provider": "openai",
        "operation": "chat",
        "usage": {"input_tokens": tokens, "output_tokens": 0},
    })
}

pub async fn check(env: &TestEnv, url: &str, key: &str, body: Value) -> (u16, Value) {
    let response = env
        .http
        .post(format!("{url}/v1/quota/check"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .expect("check answered");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

pub fn day_used(answer: &Value) -> Option<u64> {
    answer["limits"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == "tokens_per_day")?["used"]
        .as_u64()
}

/// Polls the check on `url` until the account's day usage is `used`.
pub async fn wait_used(env: &TestEnv, url: &str, account: &str, used: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, answer) = check(env, url, &env.key_a, json!({"account_id": account})).await;
        if day_used(&answer) == Some(used) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "usage never reached {used}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn post(env: &TestEnv, events: &[Value]) {
    let response = env.post_batch(&env.key_a, &batch_body(events)).await;
    assert_eq!(response.status(), 200);
}
