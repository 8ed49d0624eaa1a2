//! From untrusted bytes to events: the batch envelope, then each event on its own.
//!
//! A bad envelope fails the whole request ([`BatchError`]); a bad event becomes a
//! [`Rejection`] naming its field and reason, and the rest of the batch goes on.

use crate::event::{ErrorInfo, Event, EventType, Status, Timestamp, Tool, Usage};
use crate::money::json_usd_nanos;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};

mod content;
mod fields;
mod limits;

pub use content::json_depth;
use content::{content, content_text};
use fields::Fields;
pub use limits::{Limits, MAX_EVENT_COST_NANOS};

/// Why an event was not accepted. The codes are part of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectCode {
    NotAnObject,
    MissingField,
    InvalidType,
    InvalidValue,
    TooLong,
    UnknownEventType,
    DuplicateEventId,
    EventTooLarge,
    TimestampInFuture,
    TimestampTooOld,
    TooDeep,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotAnObject => "not_an_object",
            Self::MissingField => "missing_field",
            Self::InvalidType => "invalid_type",
            Self::InvalidValue => "invalid_value",
            Self::TooLong => "too_long",
            Self::UnknownEventType => "unknown_event_type",
            Self::DuplicateEventId => "duplicate_event_id",
            Self::EventTooLarge => "event_too_large",
            Self::TimestampInFuture => "timestamp_in_future",
            Self::TimestampTooOld => "timestamp_too_old",
            Self::TooDeep => "too_deep",
        }
    }
}

/// One refused event of a batch: `{index, event_id, code, field, message}` on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    pub index: usize,
    pub event_id: Option<String>,
    pub code: RejectCode,
    pub field: Option<String>,
    pub message: String,
}

/// A request that cannot be read as a batch at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BatchError {
    #[error("body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("{0}")]
    InvalidBatch(String),
    #[error("batch holds {count} events; at most {max} are allowed")]
    TooManyEvents { count: usize, max: usize },
}

/// The outcome of reading a batch: accepted events in order, and the rejections.
#[derive(Debug, Default)]
pub struct ParsedBatch {
    pub events: Vec<Event>,
    pub rejected: Vec<Rejection>,
}

#[derive(Deserialize)]
struct BatchBody<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(default)]
    sent_at: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    sdk: Option<Value>,
}

/// Reads a whole batch body (already decompressed) and validates every event in it.
pub fn parse_batch(
    body: &[u8],
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<ParsedBatch, BatchError> {
    // serde would also read a struct from a JSON array; the contract wants an object.
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(BatchError::InvalidBatch(
            "body must be an object with a `batch` array of events, not an array".into(),
        ));
    }
    let parsed: BatchBody = serde_json::from_slice(body).map_err(|err| {
        if err.is_data() {
            BatchError::InvalidBatch(format!(
                "body must be an object with a `batch` array of events: {err}"
            ))
        } else {
            BatchError::InvalidJson(err.to_string())
        }
    })?;
    if let Some(sent_at) = &parsed.sent_at {
        let ok = sent_at
            .as_str()
            .is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok());
        if !ok {
            return Err(BatchError::InvalidBatch(
                "`sent_at` must be an RFC 3339 timestamp".into(),
            ));
        }
    }
    if parsed.batch.is_empty() {
        return Err(BatchError::InvalidBatch("`batch` holds no events".into()));
    }
    if parsed.batch.len() > limits.max_batch_events {
        return Err(BatchError::TooManyEvents {
            count: parsed.batch.len(),
            max: limits.max_batch_events,
        });
    }

    let mut out = ParsedBatch::default();
    let mut seen_ids = HashSet::with_capacity(parsed.batch.len());
    for (index, raw) in parsed.batch.iter().enumerate() {
        match validate_raw_event(index, raw, limits, now) {
            Ok(event) if !seen_ids.insert(event.event_id.clone()) => {
                out.rejected.push(Rejection {
                    index,
                    event_id: Some(event.event_id),
                    code: RejectCode::DuplicateEventId,
                    field: Some("event_id".into()),
                    message: "this event_id appears earlier in the same batch".into(),
                });
            }
            Ok(event) => out.events.push(event),
            Err(rejection) => out.rejected.push(rejection),
        }
    }
    Ok(out)
}

fn validate_raw_event(
    index: usize,
    raw: &RawValue,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Event, Rejection> {
    let not_json = |err: serde_json::Error| Rejection {
        index,
        event_id: None,
        code: RejectCode::InvalidValue,
        field: None,
        message: format!("event is not valid JSON: {err}"),
    };
    // Fields are read as raw text first: `content` stays text (any depth within the limit),
    // the others are parsed one by one, so a failure names its field.
    let fields: BTreeMap<String, &RawValue> = match serde_json::from_str(raw.get()) {
        Ok(fields) => fields,
        Err(err) if err.is_data() => {
            return Err(Rejection {
                index,
                event_id: None,
                code: RejectCode::NotAnObject,
                field: None,
                message: "an event must be a JSON object".into(),
            })
        }
        Err(err) => return Err(not_json(err)),
    };
    let event_id = fields
        .get("event_id")
        .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
    let reject = |problem: Problem| Rejection {
        index,
        event_id: event_id.clone(),
        code: problem.code,
        field: problem.field,
        message: problem.message,
    };
    if raw.get().len() > limits.max_event_bytes {
        return Err(reject(Problem {
            code: RejectCode::EventTooLarge,
            field: None,
            message: format!(
                "event is {} bytes; at most {} are allowed",
                raw.get().len(),
                limits.max_event_bytes
            ),
        }));
    }
    let mut object = Map::new();
    let mut content = None;
    for (name, value) in fields {
        if name == "content" {
            content = Some(value);
            continue;
        }
        let parsed: Value = serde_json::from_str(value.get()).map_err(|err| {
            reject(Problem::new(
                RejectCode::InvalidValue,
                &name,
                format!("{name} cannot be read: {err}"),
            ))
        })?;
        object.insert(name, parsed);
    }
    let content = match content {
        Some(raw) if raw.get() != "null" => Some(content_text(raw, limits).map_err(&reject)?),
        _ => None,
    };
    let mut event = validate_event(&object, limits, now).map_err(&reject)?;
    event.content = content;
    Ok(event)
}

/// What is wrong with one event, before it is tied to its index in the batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub code: RejectCode,
    pub field: Option<String>,
    pub message: String,
}

impl Problem {
    fn new(code: RejectCode, field: &str, message: impl Into<String>) -> Self {
        Self {
            code,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }
}

/// Validates one event object against the wire contract.
pub fn validate_event(
    object: &Map<String, Value>,
    limits: &Limits,
    now: DateTime<Utc>,
) -> Result<Event, Problem> {
    let fields = Fields {
        object,
        limits,
        prefix: "",
    };

    let event_id = fields.required_str("event_id")?;
    let event_id = uuid::Uuid::parse_str(&event_id)
        .map_err(|_| {
            Problem::new(
                RejectCode::InvalidValue,
                "event_id",
                "event_id must be a UUID",
            )
        })?
        .hyphenated()
        .to_string();

    let type_text = fields.required_str("type")?;
    let event_type = EventType::parse(&type_text).ok_or_else(|| {
        Problem::new(
            RejectCode::UnknownEventType,
            "type",
            format!("unknown event type {type_text:?}"),
        )
    })?;

    let timestamp = timestamp(&fields.required_str("timestamp")?, limits, now)?;
    let session_id = fields.required_str("session_id")?;
    let account_id = fields.required_str("account_id")?;

    let (model, provider) = (
        fields.optional_str("model")?,
        fields.optional_str("provider")?,
    );
    if event_type.is_llm() {
        for (name, value) in [("model", &model), ("provider", &provider)] {
            if value.is_none() {
                return Err(Problem::new(
                    RejectCode::MissingField,
                    name,
                    format!("{name} is required on {} events", event_type.as_str()),
                ));
            }
        }
    }

    let tool = fields
        .optional_object("tool")?
        .map(|inner| -> Result<Tool, Problem> {
            Ok(Tool {
                name: inner.required_str("name")?,
                call_id: inner.optional_str("call_id")?,
            })
        });
    let tool = tool.transpose()?;
    if event_type.is_tool() && tool.is_none() {
        return Err(Problem::new(
            RejectCode::MissingField,
            "tool",
            format!("tool is required on {} events", event_type.as_str()),
        ));
    }

    let error = fields
        .optional_object("error")?
        .map(|inner| -> Result<ErrorInfo, Problem> {
            Ok(ErrorInfo {
                kind: inner.optional_str("type")?,
                message: inner.optional_text("message", 8 * 1024)?,
                stack: inner.optional_text("stack", 64 * 1024)?,
            })
        });
    let error = error.transpose()?;
    if event_type == EventType::Error
        && error
            .as_ref()
            .is_none_or(|e| e.kind.is_none() && e.message.is_none())
    {
        return Err(Problem::new(
            RejectCode::MissingField,
            "error",
            "error events need error.type or error.message",
        ));
    }

    Ok(Event {
        event_id,
        event_type,
        timestamp,
        session_id,
        account_id,
        trace_id: fields.optional_str("trace_id")?,
        span_id: fields.optional_str("span_id")?,
        parent_span_id: fields.optional_str("parent_span_id")?,
        operation: fields.optional_str("operation")?,
        model,
        provider,
        usage: usage(&fields)?,
        provided_cost_nanos: cost(object)?,
        duration_ms: fields.optional_count("duration_ms", limits.max_duration_ms)?,
        time_to_first_token_ms: fields
            .optional_count("time_to_first_token_ms", limits.max_duration_ms)?,
        status: status(object)?,
        tool,
        error,
        content: content(object, limits)?,
        attributes: attributes(object, limits)?,
    })
}

fn timestamp(text: &str, limits: &Limits, now: DateTime<Utc>) -> Result<Timestamp, Problem> {
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|_| {
            Problem::new(
                RejectCode::InvalidValue,
                "timestamp",
                "timestamp must be RFC 3339, e.g. 2026-11-22T10:00:00.120Z",
            )
        })?
        .with_timezone(&Utc);
    if at > now + chrono::Duration::hours(limits.max_future_hours) {
        return Err(Problem::new(
            RejectCode::TimestampInFuture,
            "timestamp",
            format!(
                "timestamp is more than {} h in the future",
                limits.max_future_hours
            ),
        ));
    }
    if at < now - chrono::Duration::days(limits.max_age_days) {
        return Err(Problem::new(
            RejectCode::TimestampTooOld,
            "timestamp",
            format!(
                "timestamp is older than the {}-day retention",
                limits.max_age_days
            ),
        ));
    }
    Ok(Timestamp::from_datetime(at))
}

fn usage(fields: &Fields) -> Result<Usage, Problem> {
    let Some(inner) = fields.optional_object("usage")? else {
        return Ok(Usage::default());
    };
    let max = fields.limits.max_tokens;
    let usage = Usage {
        input_tokens: inner.optional_count("input_tokens", max)?.unwrap_or(0),
        output_tokens: inner.optional_count("output_tokens", max)?.unwrap_or(0),
        cache_read_tokens: inner.optional_count("cache_read_tokens", max)?.unwrap_or(0),
        cache_write_tokens: inner
            .optional_count("cache_write_tokens", max)?
            .unwrap_or(0),
    };
    let cached = usage
        .cache_read_tokens
        .saturating_add(usage.cache_write_tokens);
    if cached > usage.input_tokens {
        return Err(Problem::new(
            RejectCode::InvalidValue,
            "usage.input_tokens",
            "input_tokens includes cache reads and writes, so it cannot be smaller than their sum",
        ));
    }
    Ok(usage)
}

fn cost(object: &Map<String, Value>) -> Result<Option<i64>, Problem> {
    match object.get("cost_usd") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match json_usd_nanos(n) {
            Some(nanos) if nanos <= MAX_EVENT_COST_NANOS => Ok(Some(nanos)),
            Some(_) => Err(Problem::new(
                RejectCode::InvalidValue,
                "cost_usd",
                format!(
                    "cost_usd is larger than {} US dollars",
                    MAX_EVENT_COST_NANOS / crate::money::NANOS_PER_USD
                ),
            )),
            None => Err(Problem::new(
                RejectCode::InvalidValue,
                "cost_usd",
                "cost_usd must be a non-negative amount of US dollars",
            )),
        },
        Some(_) => Err(Problem::new(
            RejectCode::InvalidType,
            "cost_usd",
            "cost_usd must be a number",
        )),
    }
}

fn status(object: &Map<String, Value>) -> Result<Option<Status>, Problem> {
    match object.get("status") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "ok" => Ok(Some(Status::Ok)),
        Some(Value::String(s)) if s == "error" => Ok(Some(Status::Error)),
        Some(_) => Err(Problem::new(
            RejectCode::InvalidValue,
            "status",
            "status must be \"ok\" or \"error\"",
        )),
    }
}

fn attributes(
    object: &Map<String, Value>,
    limits: &Limits,
) -> Result<BTreeMap<String, Value>, Problem> {
    let map = match object.get("attributes") {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Object(map)) => map,
        Some(_) => {
            return Err(Problem::new(
                RejectCode::InvalidType,
                "attributes",
                "attributes must be an object",
            ))
        }
    };
    if map.len() > limits.max_attributes {
        return Err(Problem::new(
            RejectCode::TooLong,
            "attributes",
            format!(
                "attributes holds {} entries; at most {} are allowed",
                map.len(),
                limits.max_attributes
            ),
        ));
    }
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let field = format!("attributes.{key}");
        if key.is_empty() || key.chars().count() > limits.max_string_chars {
            return Err(Problem::new(
                RejectCode::InvalidValue,
                &field,
                format!(
                    "attribute names must be 1 to {} characters",
                    limits.max_string_chars
                ),
            ));
        }
        match value {
            Value::String(s) if s.chars().count() > 1024 => {
                return Err(Problem::new(
                    RejectCode::TooLong,
                    &field,
                    "attribute strings hold at most 1024 characters",
                ))
            }
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {}
            _ => {
                return Err(Problem::new(
                    RejectCode::InvalidType,
                    &field,
                    "attribute values must be strings, numbers or booleans",
                ))
            }
        }
        out.insert(key.clone(), value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
