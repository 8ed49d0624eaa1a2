//! The test vectors of `sdk-spec/vectors/`: loading a file, expanding its placeholders and
//! matching an answer against an expectation, as the files' `description`s define them.

use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::Value;
use std::path::Path;

/// One vector file, parsed.
pub fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../sdk-spec/vectors")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("the vector file is readable");
    serde_json::from_str(&text).expect("the vector file is JSON")
}

/// Placeholders of one run: `{{run}}`, `{{now}}`, `{{now±N[dhm]}}` and `{{repeat:C:N}}`, inside
/// any string, all against one `now`.
pub struct Placeholders {
    now: DateTime<Utc>,
    run: String,
}

impl Default for Placeholders {
    fn default() -> Self {
        Self::new()
    }
}

impl Placeholders {
    pub fn new() -> Self {
        Self {
            now: Utc::now(),
            run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
        }
    }

    /// `value` with every placeholder of every string replaced.
    pub fn expand(&self, value: &Value) -> Value {
        match value {
            Value::String(text) => Value::String(self.expand_text(text)),
            Value::Array(items) => Value::Array(items.iter().map(|v| self.expand(v)).collect()),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.expand(v)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    pub fn expand_text(&self, text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            let end = rest[start..]
                .find("}}")
                .map(|e| start + e)
                .unwrap_or_else(|| panic!("an unclosed placeholder in {text:?}"));
            out.push_str(&rest[..start]);
            out.push_str(&self.one(&rest[start + 2..end]));
            rest = &rest[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn one(&self, spec: &str) -> String {
        if spec == "run" {
            return self.run.clone();
        }
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
            return (self.now + offset).to_rfc3339_opts(SecondsFormat::Millis, true);
        }
        if let Some(rest) = spec.strip_prefix("repeat:") {
            let (text, count) = rest.rsplit_once(':').expect("repeat:C:N");
            return text.repeat(count.parse().expect("count"));
        }
        panic!("unknown placeholder {spec}");
    }
}

/// `expected` is a subset of `actual`: keys given must match, arrays have equal length, "*"
/// is anything.
pub fn matches(expected: &Value, actual: &Value) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_expand_inside_strings_against_one_now() {
        let p = Placeholders::new();
        let text = p.expand_text("/x?from={{now-1h}}&to={{now}}&id=s-{{run}}&a={{repeat:b:3}}");
        let now = p.now.to_rfc3339_opts(SecondsFormat::Millis, true);
        let hour_ago =
            (p.now - ChronoDuration::hours(1)).to_rfc3339_opts(SecondsFormat::Millis, true);
        assert_eq!(
            text,
            format!("/x?from={hour_ago}&to={now}&id=s-{}&a=bbb", p.run)
        );
        assert_eq!(p.expand(&json!(["{{run}}"])), json!([p.run]));
    }

    #[test]
    fn matching_is_by_subset_with_wildcards() {
        let actual = json!({"a": 1, "b": [1, {"c": 2, "d": 3}], "e": 1.0});
        assert!(matches(&json!({"b": ["*", {"c": 2}]}), &actual));
        assert!(!matches(&json!({"b": [1]}), &actual));
        assert!(!matches(&json!({"e": 1}), &actual));
        assert!(!matches(&json!({"z": "*"}), &actual));
    }
}
