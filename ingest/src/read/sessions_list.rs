//! `GET /v1/sessions`: the project's sessions that started in a time range, newest first,
//! filtered by account, status and model, a page at a time.

use super::params::{Params, SessionCursor, MAX_SPAN_MS};
use crate::auth::Scope;
use crate::error::ApiError;
use crate::server::AppState;
use crate::sessions::SessionSummary;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use tally_schema::event::Timestamp;
use tally_schema::queries;
use tally_schema::rows::SessionRow;

/// Sessions a page holds unless `limit` says otherwise.
pub const DEFAULT_PAGE: u32 = 50;
/// Most sessions a page may hold.
pub const MAX_PAGE: u32 = 500;

const PARAMETERS: &[&str] = &[
    "from",
    "to",
    "account_id",
    "status",
    "model",
    "limit",
    "cursor",
];

#[derive(Debug, Serialize)]
pub struct SessionPage {
    pub from: Timestamp,
    pub to: Timestamp,
    /// Ordered by start time, newest first, then by session id (descending).
    pub sessions: Vec<SessionSummary>,
    /// Pass as `cursor` (with the same filters) for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

pub async fn list_sessions(
    request: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let principal = state.keys.authorize(&request, Scope::Read)?;
    let params = Params::parse(request.query_string(), PARAMETERS)?;
    let range = params.time_range(chrono::Utc::now().timestamp_millis(), MAX_SPAN_MS)?;
    let account_id = params.id("account_id")?.unwrap_or_default();
    let status = params
        .choice("status", &[("ok", "ok"), ("error", "error")])?
        .unwrap_or_default();
    let model = params.id("model")?.unwrap_or_default();
    let limit = params.limit(DEFAULT_PAGE, MAX_PAGE)?;
    let cursor = params
        .get("cursor")
        .map(SessionCursor::decode)
        .transpose()?;

    let (has_cursor, cursor_ts, cursor_session) = match &cursor {
        Some(c) => (1u8, c.first_ts_ms, c.session_id.as_str()),
        None => (0u8, 0, ""),
    };
    // One row more than the page tells whether another page follows.
    let mut rows = state
        .clickhouse
        .query(queries::SESSIONS_LIST.sql)
        .bind(&principal.project_id)
        .bind(range.from_ms)
        .bind(range.to_ms)
        .bind(&account_id)
        .bind(&account_id)
        .bind(status)
        .bind(status)
        .bind(&model)
        .bind(&model)
        .bind(has_cursor)
        .bind(cursor_ts)
        .bind(cursor_session)
        .bind(limit + 1)
        .fetch_all::<SessionRow>()
        .await?;
    let next_cursor = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|last| {
            SessionCursor {
                first_ts_ms: last.first_ts_ms,
                session_id: last.session_id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(SessionPage {
        from: Timestamp(range.from_ms),
        to: Timestamp(range.to_ms),
        sessions: rows.into_iter().map(SessionSummary::from).collect(),
        next_cursor,
    }))
}
