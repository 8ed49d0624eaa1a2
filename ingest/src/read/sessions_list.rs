//! `GET /v1/sessions`: the project's sessions that started in a time range, newest first,
//! filtered by account, status and model, a page at a time.

use super::params::{PageCursor, Params, MAX_SPAN_MS};
use crate::auth::Scope;
use crate::error::ApiError;
use crate::ratelimit::RouteGroup;
use crate::read::sessions::SessionSummary;
use crate::read::ReadState;
use actix_web::{web, HttpRequest, HttpResponse};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use tally_runtime::clickhouse::lookup_chunks;
use tally_schema::event::Timestamp;
use tally_schema::queries::params::{self, prepare};
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

/// Where a session stands in the list.
#[derive(Debug, Row, Deserialize)]
struct PageKey {
    first_ts_ms: i64,
    session_id: String,
}

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
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let principal = state.gate.admit(&request, Scope::Read, RouteGroup::Read)?;
    let params = Params::parse(request.query_string(), PARAMETERS)?;
    let range = params.time_range(chrono::Utc::now().timestamp_millis(), MAX_SPAN_MS)?;
    let account_id = super::metrics::account_filter(&principal, &params)?;
    let status = params
        .choice("status", &[("ok", "ok"), ("error", "error")])?
        .unwrap_or_default();
    let model = params.id("model")?.unwrap_or_default();
    let limit = params.limit(DEFAULT_PAGE, MAX_PAGE)?;
    let cursor = params.get("cursor").map(PageCursor::decode).transpose()?;

    // One key more than the page tells whether another page follows.
    let page = params::SessionsPage {
        project_id: &principal.project_id,
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        account_id: &account_id,
        status,
        model: &model,
        after: cursor.as_ref().map(|c| (c.ts_ms, c.id.as_str())),
        limit: limit + 1,
    };
    let mut keys = prepare(&state.clickhouse, page)
        .fetch_all::<PageKey>()
        .await?;
    let next_cursor = if keys.len() > limit as usize {
        keys.truncate(limit as usize);
        keys.last().map(|last| {
            PageCursor {
                ts_ms: last.first_ts_ms,
                id: last.session_id.clone(),
            }
            .encode()
        })
    } else {
        None
    };
    let mut rows: HashMap<String, SessionRow> = HashMap::new();
    let ids: Vec<&str> = keys.iter().map(|k| k.session_id.as_str()).collect();
    // A page of long ids would make one query larger than ClickHouse takes: bounded lookups.
    for chunk in lookup_chunks(&ids) {
        let sessions = params::SessionsById {
            project_id: &principal.project_id,
            session_ids: chunk,
        };
        let part = prepare(&state.clickhouse, sessions)
            .fetch_all::<SessionRow>()
            .await?;
        rows.extend(part.into_iter().map(|row| (row.session_id.clone(), row)));
    }
    // In the page's order; a row read a moment later may be newer than its key, never older.
    let sessions = keys
        .iter()
        .filter_map(|key| rows.remove(&key.session_id))
        .map(SessionSummary::from)
        .collect();
    Ok(HttpResponse::Ok().json(SessionPage {
        from: Timestamp(range.from_ms),
        to: Timestamp(range.to_ms),
        sessions,
        next_cursor,
    }))
}

#[cfg(test)]
mod columns {
    use super::*;
    use tally_schema::queries::{self as q, assert_columns};

    #[test]
    fn rows_read_the_columns_their_queries_return() {
        assert_columns::<PageKey>(&q::SESSIONS_PAGE);
    }
}
