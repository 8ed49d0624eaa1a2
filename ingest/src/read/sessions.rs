//! The session read routes, scoped to the read key's project:
//! `GET /v1/sessions/{id}` (the rollup) and `GET /v1/sessions/{id}/timeline` (the events, in
//! pages bounded in events and bytes).

use crate::auth::Scope;
use crate::error::{ApiError, ErrorCode};
use crate::ratelimit::RouteGroup;
use crate::read::params::{PageCursor, Params};
use crate::read::ReadState;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use std::collections::BTreeMap;
use tally_schema::event::{Event, Timestamp, Usage};
use tally_schema::money::nanos_to_json;
use tally_schema::queries::params::{self, prepare};
use tally_schema::rows::{EventRow, SessionRow};

#[derive(Debug, Serialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub account_id: String,
    pub started_at: Timestamp,
    pub last_event_at: Timestamp,
    pub duration_ms: i64,
    pub event_count: u64,
    pub event_counts: BTreeMap<String, u64>,
    pub llm_calls: u64,
    pub tool_calls: u64,
    pub errors: u64,
    pub usage: Usage,
    /// Cost by Tally's price table (the price in force at each event's time).
    pub cost_usd: serde_json::Value,
    /// Sum of the `cost_usd` the SDK sent with the session's events.
    pub provided_cost_usd: serde_json::Value,
    /// Events with usage whose model had no price; they count as zero in `cost_usd`.
    pub unpriced_events: u64,
    /// Distinct models used, sorted; at most 64.
    pub models: Vec<String>,
    /// True when the session used more models than `models` lists.
    pub models_truncated: bool,
    /// `ended` once a `session_end` arrived, else `active`.
    pub state: &'static str,
    /// `error` when any event failed, else `ok`.
    pub status: &'static str,
}

impl From<SessionRow> for SessionSummary {
    fn from(row: SessionRow) -> Self {
        Self {
            event_counts: row.counts_by_type(),
            started_at: Timestamp(row.first_ts_ms),
            last_event_at: Timestamp(row.last_ts_ms),
            duration_ms: row.last_ts_ms - row.first_ts_ms,
            event_count: row.event_count,
            llm_calls: row.llm_calls,
            tool_calls: row.tool_calls,
            errors: row.errors,
            usage: Usage {
                input_tokens: row.input_tokens,
                output_tokens: row.output_tokens,
                cache_read_tokens: row.cache_read_tokens,
                cache_write_tokens: row.cache_write_tokens,
            },
            cost_usd: nanos_to_json(row.cost_nanos),
            provided_cost_usd: nanos_to_json(row.provided_cost_nanos),
            unpriced_events: row.unpriced_events,
            state: if row.ended == 1 { "ended" } else { "active" },
            status: if row.errors > 0 { "error" } else { "ok" },
            models: row.models,
            models_truncated: row.models_truncated == 1,
            session_id: row.session_id,
            account_id: row.account_id,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Timeline {
    pub session_id: String,
    pub events: Vec<Event>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Events in one timeline page when `limit` is not given, and the most it may ask for.
pub const TIMELINE_PAGE: u32 = 1000;
/// Most bytes of event text (content, attributes, error text) one timeline page holds: a
/// page ends early rather than pass it, so an answer stays within this plus one event
/// (`max_event_bytes`), however large the session's events are.
pub const TIMELINE_PAGE_BYTES: usize = 8 * 1024 * 1024;

const TIMELINE_PARAMETERS: &[&str] = &["limit", "cursor", "content"];

fn session_id(path: &web::Path<String>) -> Result<String, ApiError> {
    let id = path.as_str();
    if id.is_empty() || id.chars().count() > 128 {
        return Err(ApiError::BadRequest {
            code: ErrorCode::InvalidSessionId,
            field: Some("session_id".into()),
            message: "session id must be 1 to 128 characters".into(),
        });
    }
    Ok(id.to_owned())
}

pub async fn get_session(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let principal = state.gate.admit(&request, Scope::Read, RouteGroup::Read)?;
    let session_id = session_id(&path)?;
    let rollup = params::SessionRollup {
        project_id: &principal.project_id,
        session_id: &session_id,
    };
    let row = prepare(&state.clickhouse, rollup)
        .fetch_optional::<SessionRow>()
        .await?
        .ok_or(ApiError::NotFound("session"))?;
    Ok(HttpResponse::Ok().json(SessionSummary::from(row)))
}

pub async fn get_timeline(
    request: HttpRequest,
    path: web::Path<String>,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let principal = state.gate.admit(&request, Scope::Read, RouteGroup::Read)?;
    let session_id = session_id(&path)?;
    let params = Params::parse(request.query_string(), TIMELINE_PARAMETERS)?;
    let limit = params.limit(TIMELINE_PAGE, TIMELINE_PAGE)?;
    let cursor = params.get("cursor").map(PageCursor::decode).transpose()?;
    let with_content = params
        .choice("content", &[("true", true), ("false", false)])?
        .unwrap_or(true);
    // Rows are read one by one, so a page of large events stops at its byte budget without
    // holding the rest; one row more than the page tells whether another follows.
    let page = params::SessionTimeline {
        with_content,
        project_id: &principal.project_id,
        session_id: &session_id,
        after: cursor.as_ref().map(|c| (c.ts_ms, c.id.as_str())),
        limit: limit + 1,
    };
    let mut rows = prepare(&state.clickhouse, page).fetch::<EventRow>()?;
    let (mut events, mut bytes, mut more) = (Vec::new(), 0usize, false);
    while let Some(row) = rows.next().await? {
        let size = row.content.len()
            + row.attributes.len()
            + row.error_message.len()
            + row.error_stack.len();
        if events.len() == limit as usize
            || (!events.is_empty() && bytes + size > TIMELINE_PAGE_BYTES)
        {
            more = true;
            break;
        }
        bytes += size;
        events.push(row.into_event());
    }
    if events.is_empty() && cursor.is_none() {
        return Err(ApiError::NotFound("session"));
    }
    let next_cursor = more.then(|| events.last()).flatten().map(|last: &Event| {
        PageCursor {
            ts_ms: last.timestamp.0,
            id: last.event_id.clone(),
        }
        .encode()
    });
    Ok(HttpResponse::Ok().json(Timeline {
        session_id,
        events,
        next_cursor,
    }))
}
