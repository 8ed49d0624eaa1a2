//! Realistic LLM-application sessions, generated from a seed so every run is the same.

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

const MODELS: [(&str, &str); 4] = [
    ("gpt-4o", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("gemini-2.5-flash", "google"),
    ("mistral-large", "mistral"),
];
const OPERATIONS: [&str; 3] = ["conversation", "email_draft", "summarize"];
const TOOLS: [&str; 3] = ["web_search", "sql_query", "calendar"];

/// Generates sessions of events as the wire format's JSON.
pub struct Workload {
    rng: StdRng,
    start: DateTime<Utc>,
    run: String,
}

impl Workload {
    /// Events start `start` and move forward in time; `run` keeps ids of runs apart.
    pub fn new(seed: u64, start: DateTime<Utc>) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            start,
            run: format!("{seed:x}"),
        }
    }

    /// Sessions generated from now on start within a minute after `start`.
    pub fn set_start(&mut self, start: DateTime<Utc>) {
        self.start = start;
    }

    fn id(&mut self) -> String {
        uuid::Builder::from_random_bytes(self.rng.random())
            .into_uuid()
            .to_string()
    }

    fn at(&self, offset_ms: i64) -> String {
        (self.start + Duration::milliseconds(offset_ms))
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }

    /// One session: start, a few turns of user message → LLM request/response → tool calls,
    /// sometimes an error, then the end. Every field of the contract appears somewhere.
    pub fn session(&mut self, index: usize, account: &str) -> Vec<Value> {
        let session_id = format!("sess-{}-{index}", self.run);
        let trace_id = format!("{:032x}", self.rng.random::<u128>());
        let (model, provider) = MODELS[self.rng.random_range(0..MODELS.len())];
        let operation = OPERATIONS[self.rng.random_range(0..OPERATIONS.len())];
        let mut t = self.rng.random_range(0..60_000);
        let mut events = Vec::new();
        let base = |this: &mut Self, kind: &str, t: i64| {
            json!({
                "event_id": this.id(),
                "type": kind,
                "timestamp": this.at(t),
                "session_id": session_id,
                "account_id": account,
                "trace_id": trace_id,
                "operation": operation,
            })
        };
        events.push(base(self, "session_start", t));
        for turn in 0..self.rng.random_range(1..4) {
            t += self.rng.random_range(500..5_000);
            let mut message = base(self, "user_message", t);
            message["content"] = json!({"role": "user", "text": format!("question {turn}")});
            events.push(message);

            let span = format!("{:016x}", self.rng.random::<u64>());
            let input = self.rng.random_range(200..20_000u64);
            let cache_read = if self.rng.random_bool(0.5) {
                self.rng.random_range(0..input / 2)
            } else {
                0
            };
            let cache_write = if self.rng.random_bool(0.2) {
                self.rng.random_range(0..(input - cache_read) / 2)
            } else {
                0
            };
            let output = self.rng.random_range(10..2_000u64);
            let mut request = base(self, "llm_request", t + 1);
            request["span_id"] = json!(span);
            request["model"] = json!(model);
            request["provider"] = json!(provider);
            events.push(request);

            let duration = self.rng.random_range(300..9_000u64);
            t += duration as i64;
            let failed = self.rng.random_bool(0.1);
            let mut response = base(self, "llm_response", t);
            response["span_id"] = json!(span);
            response["model"] = json!(model);
            response["provider"] = json!(provider);
            response["usage"] = json!({
                "input_tokens": input, "output_tokens": output,
                "cache_read_tokens": cache_read, "cache_write_tokens": cache_write,
            });
            response["cost_usd"] = json!(self.rng.random_range(1..5_000_000u64) as f64 / 1e9);
            response["duration_ms"] = json!(duration);
            response["time_to_first_token_ms"] = json!(duration / 4);
            response["status"] = json!(if failed { "error" } else { "ok" });
            response["attributes"] = json!({"region": "eu-west", "streamed": true, "attempt": 1});
            events.push(response);
            if failed {
                let mut error = base(self, "error", t + 1);
                error["parent_span_id"] = json!(span);
                error["error"] = json!({"type": "RateLimitError", "message": "429 from provider", "stack": "at call_llm (app.py:42)"});
                error["status"] = json!("error");
                events.push(error);
                continue;
            }
            if self.rng.random_bool(0.6) {
                let tool = TOOLS[self.rng.random_range(0..TOOLS.len())];
                let call_id = format!("call_{}", self.rng.random::<u32>());
                let mut call = base(self, "tool_call", t + 2);
                call["tool"] = json!({"name": tool, "call_id": call_id});
                call["parent_span_id"] = json!(span);
                events.push(call);
                let took = self.rng.random_range(5..800u64);
                t += took as i64 + 2;
                let mut result = base(self, "tool_result", t);
                result["tool"] = json!({"name": tool, "call_id": call_id});
                result["duration_ms"] = json!(took);
                result["status"] = json!("ok");
                result["content"] = json!({"rows": took % 7});
                events.push(result);
            }
        }
        t += self.rng.random_range(100..2_000);
        events.push(base(self, "session_end", t));
        events
    }

    /// `sessions` sessions spread over `accounts` accounts, all events in one list.
    pub fn sessions(&mut self, sessions: usize, accounts: usize) -> Vec<Value> {
        (0..sessions)
            .flat_map(|i| {
                let account = format!("acct-{}", i % accounts.max(1));
                self.session(i, &account)
            })
            .collect()
    }
}

/// The body of `POST /v1/batch` for these events.
pub fn batch_body(events: &[Value]) -> Value {
    json!({"batch": events, "sent_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true), "sdk": {"name": "tally-tests", "version": env!("CARGO_PKG_VERSION")}})
}
