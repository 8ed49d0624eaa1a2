//! Query parameters of the read routes. Every route lists the names it takes; anything else,
//! a repeated name or a bad value is a 400 `invalid_parameter` naming the parameter.

use crate::error::{ApiError, ErrorCode};
use actix_web::web;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use tally_schema::event::Timestamp;

/// Longest id a filter takes (account, model, operation, tool, session), as on the wire.
pub const MAX_ID_CHARS: usize = 128;
/// Span of a time range when `from` is not given: the 24 hours before `to`.
pub const DEFAULT_SPAN_MS: i64 = 24 * HOUR_MS;
/// Longest time range of any read route.
pub const MAX_SPAN_MS: i64 = 366 * DAY_MS;
pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;
/// Times before 2000 or from 2100 on are refused: no event can be there, and ClickHouse's
/// `DateTime` (seconds in a `UInt32`) ends in 2106.
const EARLIEST_MS: i64 = 946_684_800_000;
const LATEST_MS: i64 = 4_102_444_800_000;

/// A 400 `invalid_parameter` naming `parameter`: its value breaks the parameter's own rules.
pub fn invalid(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter {
        code: ErrorCode::InvalidParameter,
        parameter: parameter.to_owned(),
        message: message.into(),
    }
}

/// A 400 `invalid_range` naming `parameter`: the time range the parameters make together is
/// not allowed (`from` not before `to`, too long, outside 2000..2100, or too many points).
pub fn invalid_range(parameter: &str, message: impl Into<String>) -> ApiError {
    ApiError::InvalidParameter {
        code: ErrorCode::InvalidRange,
        parameter: parameter.to_owned(),
        message: message.into(),
    }
}

/// The parsed query string of one request.
#[derive(Debug)]
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Parses `query` (the raw query string); only names in `allowed` may appear, each once.
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Self, ApiError> {
        let pairs = web::Query::<Vec<(String, String)>>::from_query(query)
            .map_err(|_| invalid("query", "the query string is not valid URL encoding"))?
            .into_inner();
        let mut values = BTreeMap::new();
        for (name, value) in pairs {
            if !allowed.contains(&name.as_str()) {
                let message = if allowed.is_empty() {
                    format!("unknown parameter {name:?}; this route takes none")
                } else {
                    format!(
                        "unknown parameter {name:?}; this route takes {}",
                        allowed.join(", ")
                    )
                };
                return Err(invalid(&name, message));
            }
            if values.contains_key(&name) {
                return Err(invalid(&name, format!("{name} is given more than once")));
            }
            values.insert(name, value);
        }
        Ok(Self { values })
    }

    /// The raw value; an empty value counts as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// An id filter: 1 to 128 characters, no control characters.
    pub fn id(&self, name: &str) -> Result<Option<String>, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        if value.chars().count() > MAX_ID_CHARS {
            return Err(invalid(
                name,
                format!("{name} is longer than {MAX_ID_CHARS} characters"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(invalid(name, format!("{name} holds control characters")));
        }
        Ok(Some(value.to_owned()))
    }

    /// One of a fixed set of words.
    pub fn choice<T: Copy>(
        &self,
        name: &str,
        choices: &[(&str, T)],
    ) -> Result<Option<T>, ApiError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|(word, _)| *word == value)
            .map(|(_, choice)| Some(*choice))
            .ok_or_else(|| {
                let words: Vec<&str> = choices.iter().map(|(word, _)| *word).collect();
                invalid(
                    name,
                    format!("{name} must be one of {}, not {value:?}", words.join(", ")),
                )
            })
    }

    /// `limit`: a whole number from 1 to `max`; `default` when absent.
    pub fn limit(&self, default: u32, max: u32) -> Result<u32, ApiError> {
        let Some(value) = self.get("limit") else {
            return Ok(default);
        };
        match value.parse::<u32>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(invalid(
                "limit",
                format!("limit must be a whole number from 1 to {max}, not {value:?}"),
            )),
        }
    }

    /// `from` and `to` (RFC 3339): `to` defaults to now, `from` to 24 hours before `to`;
    /// `from` must come before `to`, and the range may not be longer than `max_span_ms`.
    pub fn time_range(&self, now_ms: i64, max_span_ms: i64) -> Result<TimeRange, ApiError> {
        let to_ms = match self.get("to") {
            Some(text) => parse_time("to", text)?,
            None => now_ms,
        };
        let from_ms = match self.get("from") {
            Some(text) => parse_time("from", text)?,
            None => to_ms - DEFAULT_SPAN_MS,
        };
        if from_ms >= to_ms {
            return Err(invalid_range("from", "from must be before to"));
        }
        if to_ms - from_ms > max_span_ms {
            let days = max_span_ms / DAY_MS;
            return Err(invalid_range(
                "from",
                format!("the range from..to may span at most {days} days"),
            ));
        }
        if from_ms < EARLIEST_MS {
            return Err(invalid_range("from", "from must be in 2000 or later"));
        }
        Ok(TimeRange { from_ms, to_ms })
    }
}

fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    // A `+` of an offset arrives as a space when the client did not percent-encode it.
    let repaired = text.replace(' ', "+");
    let ms = DateTime::parse_from_rfc3339(&repaired)
        .map(|at| at.with_timezone(&Utc).timestamp_millis())
        .map_err(|_| {
            invalid(
                name,
                format!(
                    "{name} must be an RFC 3339 time such as 2026-11-22T10:00:00Z, not {text:?}"
                ),
            )
        })?;
    if !(EARLIEST_MS..LATEST_MS).contains(&ms) {
        return Err(invalid_range(
            name,
            format!("{name} must be between 2000 and 2100"),
        ));
    }
    Ok(ms)
}

/// A time range `[from, to)` in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub from_ms: i64,
    pub to_ms: i64,
}

impl TimeRange {
    /// Widened to whole periods of `step_secs` starting at `offset_secs` past the epoch:
    /// `from` rounded down, `to` rounded up; in Unix seconds.
    pub fn aligned(self, step_secs: i64, offset_secs: i64) -> AlignedRange {
        let floor =
            |secs: i64| offset_secs + (secs - offset_secs).div_euclid(step_secs) * step_secs;
        let from = floor(self.from_ms.div_euclid(1000));
        let to_secs = (self.to_ms + 999).div_euclid(1000);
        let mut to = floor(to_secs);
        if to < to_secs {
            to += step_secs;
        }
        // Both lie within 2000..2100 plus one period, well inside u32.
        AlignedRange {
            from: u32::try_from(from).unwrap_or(0),
            to: u32::try_from(to).unwrap_or(u32::MAX),
        }
    }
}

/// A range `[from, to)` in Unix seconds, on bucket boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AlignedRange {
    pub from: u32,
    pub to: u32,
}

impl AlignedRange {
    pub fn from_timestamp(self) -> Timestamp {
        Timestamp(i64::from(self.from) * 1000)
    }

    pub fn to_timestamp(self) -> Timestamp {
        Timestamp(i64::from(self.to) * 1000)
    }
}

/// Where a page ends: the last item's time and id (a session's start and id in the sessions
/// list, an event's timestamp and id in a timeline). Clients get it as an opaque string and
/// hand it back as `cursor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    pub ts_ms: i64,
    pub id: String,
}

impl PageCursor {
    pub fn encode(&self) -> String {
        hex::encode(format!("{}:{}", self.ts_ms, self.id))
    }

    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let refuse = || ApiError::InvalidParameter {
            code: ErrorCode::InvalidCursor,
            parameter: "cursor".into(),
            message: "cursor is not one this route returned".into(),
        };
        let bytes = hex::decode(text).map_err(|_| refuse())?;
        let text = String::from_utf8(bytes).map_err(|_| refuse())?;
        let (ts, id) = text.split_once(':').ok_or_else(refuse)?;
        let ts_ms = ts.parse::<i64>().map_err(|_| refuse())?;
        if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
            return Err(refuse());
        }
        Ok(Self {
            ts_ms,
            id: id.to_owned(),
        })
    }
}
