//! `content`: free-form JSON, kept as the client's text once its nesting is within
//! [`Limits::max_content_depth`].

use super::{Limits, Problem, RejectCode};
use crate::event::JsonText;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// `content` kept as the client's text, once its nesting is within the limit.
pub(super) fn content_text(raw: &RawValue, limits: &Limits) -> Result<JsonText, Problem> {
    let depth = json_depth(raw.get());
    if depth > limits.max_content_depth {
        return Err(too_deep(depth, limits));
    }
    Ok(JsonText::from_raw(raw.to_owned()))
}

fn too_deep(depth: usize, limits: &Limits) -> Problem {
    Problem::new(
        RejectCode::TooDeep,
        "content",
        format!(
            "content nests {depth} levels deep; at most {} are allowed",
            limits.max_content_depth
        ),
    )
}

/// How deeply arrays and objects nest in a valid JSON text (a scalar is 0 deep).
pub fn json_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn value_depth(value: &Value) -> usize {
    // Iterative, so a value of any depth is measured without recursion.
    let mut deepest = 0;
    let mut stack = vec![(value, 1usize)];
    while let Some((value, level)) = stack.pop() {
        match value {
            Value::Array(items) => {
                deepest = deepest.max(level);
                stack.extend(items.iter().map(|v| (v, level + 1)));
            }
            Value::Object(map) => {
                deepest = deepest.max(level);
                stack.extend(map.values().map(|v| (v, level + 1)));
            }
            _ => {}
        }
    }
    deepest
}

pub(super) fn content(
    object: &Map<String, Value>,
    limits: &Limits,
) -> Result<Option<JsonText>, Problem> {
    match object.get("content") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => {
            let depth = value_depth(value);
            if depth > limits.max_content_depth {
                return Err(too_deep(depth, limits));
            }
            Ok(Some(JsonText::from_value(value)))
        }
    }
}
