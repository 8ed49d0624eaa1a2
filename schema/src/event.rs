//! The validated event: what ingest accepted, what Kafka carries and what the timeline returns.
//!
//! Its JSON form is the wire form of DESIGN.md (`type`, RFC 3339 `timestamp`, `cost_usd`);
//! only [`crate::validate`] builds one from untrusted input.

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;

/// Every event type of the wire contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    SessionStart,
    SessionEnd,
    UserMessage,
    LlmRequest,
    LlmResponse,
    ToolCall,
    ToolResult,
    Knowledge,
    Error,
    Artifact,
    Custom,
    /// A credit or debit of an account's usage, made through the admin API only (it is not
    /// in [`EventType::ALL`], so the wire refuses it).
    UsageAdjustment,
}

impl EventType {
    pub const ALL: [EventType; 11] = [
        Self::SessionStart,
        Self::SessionEnd,
        Self::UserMessage,
        Self::LlmRequest,
        Self::LlmResponse,
        Self::ToolCall,
        Self::ToolResult,
        Self::Knowledge,
        Self::Error,
        Self::Artifact,
        Self::Custom,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SessionStart => "session_start",
            Self::SessionEnd => "session_end",
            Self::UserMessage => "user_message",
            Self::LlmRequest => "llm_request",
            Self::LlmResponse => "llm_response",
            Self::ToolCall => "tool_call",
            Self::ToolResult => "tool_result",
            Self::Knowledge => "knowledge",
            Self::Error => "error",
            Self::Artifact => "artifact",
            Self::Custom => "custom",
            Self::UsageAdjustment => "usage_adjustment",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// Like [`EventType::parse`], but also the types only Tally itself writes.
    pub fn parse_stored(text: &str) -> Option<Self> {
        Self::parse(text).or((text == "usage_adjustment").then_some(Self::UsageAdjustment))
    }

    /// `llm_request` and `llm_response` must name their model and provider.
    pub fn is_llm(self) -> bool {
        matches!(self, Self::LlmRequest | Self::LlmResponse)
    }

    pub fn is_tool(self) -> bool {
        matches!(self, Self::ToolCall | Self::ToolResult)
    }
}

/// Milliseconds since the Unix epoch; JSON form is RFC 3339 in UTC with milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Self(at.timestamp_millis())
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0)
            .single()
            .unwrap_or_default()
    }

    pub fn to_rfc3339(self) -> String {
        self.to_datetime()
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| Self::from_datetime(at.with_timezone(&Utc)))
            .map_err(serde::de::Error::custom)
    }
}

/// Token counts with OpenTelemetry GenAI semantics: `input_tokens` includes cache reads and writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
}

impl Usage {
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorInfo {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<String>,
}

/// One accepted event. Optional fields are `None` when absent (empty strings count as absent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub timestamp: Timestamp,
    pub session_id: String,
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Usage::is_zero")]
    pub usage: Usage,
    /// The cost the SDK reported, in nano-USD; kept beside the computed cost.
    #[serde(
        rename = "cost_usd",
        default,
        skip_serializing_if = "Option::is_none",
        with = "usd"
    )]
    pub provided_cost_nanos: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_first_token_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorInfo>,
    /// Free-form JSON, kept as the text the client sent: never parsed again after ingest,
    /// so no depth or shape of it can make a later stage fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<JsonText>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, serde_json::Value>,
}

/// The session every usage adjustment of a project is filed under.
pub const ADJUSTMENT_SESSION: &str = "tally-usage-adjustments";
/// The attributes a usage adjustment carries its signed tokens and its reason in (on the wire
/// and in the raw event store, so a rebuild reads them back).
const ADJUSTMENT_TOKENS: &str = "tokens";
const ADJUSTMENT_REASON: &str = "reason";

/// What a usage adjustment changes: signed, a credit below zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adjustment {
    pub tokens: i64,
    pub cost_nanos: Option<i64>,
    pub reason: String,
}

impl Event {
    /// An `error` event, or any event whose status is `error`.
    pub fn is_failure(&self) -> bool {
        self.event_type == EventType::Error || self.status == Some(Status::Error)
    }

    /// A `usage_adjustment` of `account_id`'s usage at `at`, filed under
    /// [`ADJUSTMENT_SESSION`]; `event_id` makes a retried adjustment count once.
    pub fn usage_adjustment(
        event_id: String,
        account_id: String,
        at: Timestamp,
        adjustment: Adjustment,
    ) -> Self {
        let mut attributes = BTreeMap::new();
        attributes.insert(ADJUSTMENT_TOKENS.to_owned(), adjustment.tokens.into());
        attributes.insert(ADJUSTMENT_REASON.to_owned(), adjustment.reason.into());
        Self {
            event_id,
            event_type: EventType::UsageAdjustment,
            timestamp: at,
            session_id: ADJUSTMENT_SESSION.to_owned(),
            account_id,
            trace_id: None,
            span_id: None,
            parent_span_id: None,
            operation: None,
            model: None,
            provider: None,
            usage: Usage::default(),
            provided_cost_nanos: adjustment.cost_nanos,
            duration_ms: None,
            time_to_first_token_ms: None,
            status: None,
            tool: None,
            error: None,
            content: None,
            attributes,
        }
    }

    /// The signed tokens a usage adjustment adds (0 for every other event).
    pub fn adjusted_tokens(&self) -> i64 {
        if self.event_type != EventType::UsageAdjustment {
            return 0;
        }
        self.attributes
            .get(ADJUSTMENT_TOKENS)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0)
    }
}

/// A JSON value kept as its text. Serializes as the value itself (not as a string); reading
/// it back only checks that it is one JSON value, without a nesting limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonText(Box<serde_json::value::RawValue>);

impl JsonText {
    /// The JSON text of `raw`, or `None` when it is not one JSON value.
    pub fn parse(raw: &str) -> Option<Self> {
        serde_json::value::RawValue::from_string(raw.trim().to_owned())
            .ok()
            .map(Self)
    }

    /// Text already read as one JSON value.
    pub fn from_raw(raw: Box<serde_json::value::RawValue>) -> Self {
        Self(raw)
    }

    /// The JSON text of a value built in memory.
    pub fn from_value(value: &serde_json::Value) -> Self {
        Self::parse(&value.to_string()).unwrap_or_else(Self::null)
    }

    fn null() -> Self {
        Self(serde_json::value::RawValue::NULL.to_owned())
    }

    pub fn get(&self) -> &str {
        self.0.get()
    }
}

/// The same JSON value: the same text, or texts that read as equal values (key order,
/// number spelling).
impl PartialEq for JsonText {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
            || matches!(
                (
                    serde_json::from_str::<serde_json::Value>(self.get()),
                    serde_json::from_str::<serde_json::Value>(other.get()),
                ),
                (Ok(a), Ok(b)) if a == b
            )
    }
}

/// `cost_usd` as a JSON number on the wire, nano-USD in memory.
mod usd {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(nanos: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        nanos.map(crate::money::nanos_to_json).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        let number = Option::<serde_json::Number>::deserialize(d)?;
        number
            .map(|n| {
                // Signed: usage adjustments carry credits; the wire check refuses negatives.
                crate::money::json_signed_usd_nanos(&n).ok_or_else(|| {
                    serde::de::Error::custom("cost_usd is not an amount of US dollars")
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;

    #[test]
    fn an_adjustment_carries_its_tokens_through_the_envelope() {
        let adjustment = Adjustment {
            tokens: -1_500,
            cost_nanos: Some(-2_000_000_000),
            reason: "refund".into(),
        };
        let event =
            Event::usage_adjustment("a-1".into(), "acct".into(), Timestamp(1_000), adjustment);
        let decoded = Envelope::decode(&Envelope::new("p", 1_000, event).encode())
            .expect("decodes")
            .event;
        assert_eq!(decoded.event_type, EventType::UsageAdjustment);
        assert_eq!(decoded.session_id, ADJUSTMENT_SESSION);
        assert_eq!(decoded.adjusted_tokens(), -1_500);
        assert_eq!(decoded.provided_cost_nanos, Some(-2_000_000_000));
        assert_eq!(decoded.attributes["reason"], "refund");
        let mut other = decoded;
        other.event_type = EventType::Custom;
        assert_eq!(other.adjusted_tokens(), 0, "only adjustments adjust");
    }
}
