//! `GET /v1/metrics/summary` and `GET /v1/metrics/usage`: totals and usage over time from
//! the usage rollups (daily rows for whole days, hourly rows around them), sessions from the
//! session rollup.

use super::params::{invalid_range, AlignedRange, Params, DAY_MS, MAX_SPAN_MS};
use super::rollup::{MetricsTotals, MetricsUsage, RollupFilters, RollupRange, RollupScope};
use crate::auth::{Principal, Scope};
use crate::error::ApiError;
use crate::ratelimit::RouteGroup;
use crate::read::ReadState;
use actix_web::{web, HttpRequest, HttpResponse};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tally_schema::event::{Timestamp, Usage};
use tally_schema::money::nanos_to_json;
use tally_schema::queries::params::{self, prepare};

/// Most points one usage answer holds; a longer answer is refused with a 400.
pub const MAX_USAGE_POINTS: usize = 10_000;
const HOUR_SECS: i64 = 3_600;

/// Authenticates a read request and parses its parameters.
pub(super) fn read_request(
    request: &HttpRequest,
    state: &ReadState,
    parameters: &[&str],
) -> Result<(Principal, Params), ApiError> {
    let principal = state.gate.admit(request, Scope::Read, RouteGroup::Read)?;
    let params = Params::parse(request.query_string(), parameters)?;
    Ok((principal, params))
}

/// The filters a metrics route takes; `operation` only where `take_operation`.
pub(super) fn rollup_filters(
    principal: &Principal,
    params: &Params,
    take_operation: bool,
) -> Result<RollupFilters, ApiError> {
    Ok(RollupFilters {
        account_id: account_filter(principal, params)?,
        model: params.id("model")?.unwrap_or_default(),
        operation: if take_operation {
            params.id("operation")?.unwrap_or_default()
        } else {
            String::new()
        },
    })
}

/// The `account_id` filter as accounts are stored (hashed where the project hashes them);
/// empty when absent.
pub(super) fn account_filter(principal: &Principal, params: &Params) -> Result<String, ApiError> {
    Ok(params
        .id("account_id")?
        .map(|id| principal.redact.account_id(&principal.project_id, &id))
        .unwrap_or_default())
}

/// `from`/`to` widened to whole hours (the finest rollup).
pub(super) fn hour_range(params: &Params) -> Result<AlignedRange, ApiError> {
    let range = params.time_range(chrono::Utc::now().timestamp_millis(), MAX_SPAN_MS)?;
    Ok(range.aligned(HOUR_SECS, 0))
}

#[derive(Debug, Row, Deserialize)]
struct TotalsRow {
    events: u64,
    llm_requests: u64,
    llm_responses: u64,
    errors: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    adjusted_tokens: i64,
    cost_nanos: i64,
    provided_cost_nanos: i64,
    unpriced_events: u64,
    duration_count: u64,
    duration_sum_ms: u64,
    ttft_count: u64,
    ttft_sum_ms: u64,
}

#[derive(Debug, Row, Deserialize)]
struct SessionsRow {
    sessions: u64,
    sessions_with_errors: u64,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// The range answered: `from`/`to` widened to whole hours.
    pub from: Timestamp,
    pub to: Timestamp,
    /// Sessions that started in the range.
    pub sessions: u64,
    /// Of those, the sessions with at least one failed event.
    pub sessions_with_errors: u64,
    /// `sessions_with_errors / sessions`; null without sessions.
    pub error_rate: Option<f64>,
    /// Events in the range, of every type.
    pub events: u64,
    /// LLM calls (`llm_request` events) and responses (`llm_response` events).
    pub llm_calls: u64,
    pub llm_responses: u64,
    /// Failed events: `error` events and events with status `error`.
    pub errors: u64,
    pub usage: Usage,
    /// Signed tokens of usage adjustments made through the admin API (credits are negative);
    /// not part of `usage`.
    pub adjusted_tokens: i64,
    /// Cost by Tally's price table, adjustments included; events whose model had no price
    /// count as zero and are counted in `unpriced_events`.
    pub cost_usd: serde_json::Value,
    /// Sum of the `cost_usd` the SDK sent.
    pub provided_cost_usd: serde_json::Value,
    pub unpriced_events: u64,
    /// Exact average LLM response duration and time to first token; null without data.
    pub avg_latency_ms: Option<f64>,
    pub avg_time_to_first_token_ms: Option<f64>,
}

fn ratio(part: u64, whole: u64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

pub async fn summary(
    request: HttpRequest,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    // No `operation`: sessions have no single operation to filter by.
    let (principal, params) =
        read_request(&request, &state, &["from", "to", "account_id", "model"])?;
    let range = hour_range(&params)?;
    let filters = rollup_filters(&principal, &params, false)?;
    let project_id = principal.project_id.as_str();

    let rollups = RollupRange::split(range);
    let scope = RollupScope {
        project_id,
        range: &rollups,
        filters: &filters,
    };
    let totals = prepare(&state.clickhouse, MetricsTotals(scope)).fetch_one::<TotalsRow>();
    let started = params::SessionsStarted {
        project_id,
        from_ms: i64::from(range.from) * 1000,
        to_ms: i64::from(range.to) * 1000,
        account_id: &filters.account_id,
        model: &filters.model,
    };
    let sessions = prepare(&state.clickhouse, started).fetch_one::<SessionsRow>();
    let (totals, sessions) = futures::try_join!(totals, sessions)?;

    Ok(HttpResponse::Ok().json(Summary {
        from: range.from_timestamp(),
        to: range.to_timestamp(),
        sessions: sessions.sessions,
        sessions_with_errors: sessions.sessions_with_errors,
        error_rate: ratio(sessions.sessions_with_errors, sessions.sessions),
        events: totals.events,
        llm_calls: totals.llm_requests,
        llm_responses: totals.llm_responses,
        errors: totals.errors,
        usage: Usage {
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
            cache_read_tokens: totals.cache_read_tokens,
            cache_write_tokens: totals.cache_write_tokens,
        },
        adjusted_tokens: totals.adjusted_tokens,
        cost_usd: nanos_to_json(totals.cost_nanos),
        provided_cost_usd: nanos_to_json(totals.provided_cost_nanos),
        unpriced_events: totals.unpriced_events,
        avg_latency_ms: (totals.duration_count > 0)
            .then(|| totals.duration_sum_ms as f64 / totals.duration_count as f64),
        avg_time_to_first_token_ms: (totals.ttft_count > 0)
            .then(|| totals.ttft_sum_ms as f64 / totals.ttft_count as f64),
    }))
}

/// The bucket size of `GET /v1/metrics/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hour,
    Day,
    /// ISO weeks: Monday 00:00 UTC to the next Monday.
    Week,
}

impl Period {
    pub const CHOICES: [(&'static str, Period); 3] = [
        ("hour", Period::Hour),
        ("day", Period::Day),
        ("week", Period::Week),
    ];

    /// Length and offset from the Unix epoch of the buckets, in seconds; the epoch was a
    /// Thursday, so weeks start 4 days after it.
    pub fn step_and_offset(self) -> (i64, i64) {
        match self {
            Self::Hour => (HOUR_SECS, 0),
            Self::Day => (86_400, 0),
            Self::Week => (7 * 86_400, 4 * 86_400),
        }
    }

    /// Longest range: 31 days by the hour (744 buckets), a year otherwise.
    pub fn max_span_ms(self) -> i64 {
        match self {
            Self::Hour => 31 * DAY_MS,
            Self::Day | Self::Week => MAX_SPAN_MS,
        }
    }
}

/// What `GET /v1/metrics/usage` groups by, besides time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Model,
    Operation,
    Account,
}

impl GroupBy {
    pub const CHOICES: [(&'static str, GroupBy); 3] = [
        ("model", GroupBy::Model),
        ("operation", GroupBy::Operation),
        ("account", GroupBy::Account),
    ];

    /// The word the usage and cost queries switch on.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Model => "model",
            Self::Operation => "operation",
            Self::Account => "account",
        }
    }
}

#[derive(Debug, Row, Deserialize)]
pub(super) struct UsagePointRow {
    pub point: u32,
    pub group_key: String,
    pub events: u64,
    pub llm_requests: u64,
    pub llm_responses: u64,
    pub errors: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_read_tokens: u64,
    pub cache_write_tokens: u64,
    pub adjusted_tokens: i64,
    pub cost_nanos: i64,
    pub provided_cost_nanos: i64,
    pub unpriced_events: u64,
}

#[derive(Debug, Serialize)]
pub struct UsagePoint {
    /// Start of the bucket.
    pub bucket: Timestamp,
    /// The model, operation or account of the point; null when not grouped, or for events
    /// without one (e.g. tool events have no model).
    pub group: Option<String>,
    pub events: u64,
    pub llm_calls: u64,
    pub llm_responses: u64,
    pub errors: u64,
    pub usage: Usage,
    /// Signed tokens of usage adjustments (credits are negative).
    pub adjusted_tokens: i64,
    pub cost_usd: serde_json::Value,
    pub provided_cost_usd: serde_json::Value,
    pub unpriced_events: u64,
}

impl From<UsagePointRow> for UsagePoint {
    fn from(row: UsagePointRow) -> Self {
        Self {
            bucket: Timestamp(i64::from(row.point) * 1000),
            group: (!row.group_key.is_empty()).then_some(row.group_key),
            events: row.events,
            llm_calls: row.llm_requests,
            llm_responses: row.llm_responses,
            errors: row.errors,
            usage: Usage {
                input_tokens: row.input_tokens,
                output_tokens: row.output_tokens,
                cache_read_tokens: row.cache_read_tokens,
                cache_write_tokens: row.cache_write_tokens,
            },
            adjusted_tokens: row.adjusted_tokens,
            cost_usd: nanos_to_json(row.cost_nanos),
            provided_cost_usd: nanos_to_json(row.provided_cost_nanos),
            unpriced_events: row.unpriced_events,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct UsageSeries {
    /// The range answered: `from`/`to` widened to whole buckets.
    pub from: Timestamp,
    pub to: Timestamp,
    pub granularity: Period,
    pub group_by: Option<GroupBy>,
    /// Buckets with usage, in time order, then by group; empty buckets are left out.
    pub points: Vec<UsagePoint>,
}

/// Usage points per bucket of `period` and group, over `rollups`.
pub(super) async fn usage_points(
    state: &ReadState,
    project_id: &str,
    period: Period,
    group_by: Option<GroupBy>,
    rollups: &RollupRange,
    filters: &RollupFilters,
    limit: usize,
) -> Result<Vec<UsagePointRow>, ApiError> {
    let (step, offset) = period.step_and_offset();
    let group = group_by.map_or("", GroupBy::as_str);
    let series = MetricsUsage {
        step,
        offset,
        group,
        scope: RollupScope {
            project_id,
            range: rollups,
            filters,
        },
        limit: limit as u64,
    };
    Ok(prepare(&state.clickhouse, series)
        .fetch_all::<UsagePointRow>()
        .await?)
}

pub async fn usage(
    request: HttpRequest,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let (principal, params) = read_request(
        &request,
        &state,
        &[
            "from",
            "to",
            "granularity",
            "group_by",
            "account_id",
            "model",
            "operation",
        ],
    )?;
    let period = params
        .choice("granularity", &Period::CHOICES)?
        .unwrap_or(Period::Hour);
    let group_by = params.choice("group_by", &GroupBy::CHOICES)?;
    let filters = rollup_filters(&principal, &params, true)?;
    let requested = params.time_range(chrono::Utc::now().timestamp_millis(), MAX_SPAN_MS)?;
    if requested.to_ms - requested.from_ms > period.max_span_ms() {
        return Err(invalid_range(
            "granularity",
            format!(
                "with granularity={} the range from..to may span at most {} days",
                params.get("granularity").unwrap_or("hour"),
                period.max_span_ms() / DAY_MS
            ),
        ));
    }
    let (step, offset) = period.step_and_offset();
    let range = requested.aligned(step, offset);
    let rollups = match period {
        Period::Hour => RollupRange::hourly(range),
        Period::Day | Period::Week => RollupRange::split(range),
    };
    let rows = usage_points(
        &state,
        &principal.project_id,
        period,
        group_by,
        &rollups,
        &filters,
        MAX_USAGE_POINTS + 1,
    )
    .await?;
    if rows.len() > MAX_USAGE_POINTS {
        return Err(invalid_range(
            "granularity",
            format!(
                "the answer would hold more than {MAX_USAGE_POINTS} points; use a shorter \
                 range, a coarser granularity or a filter"
            ),
        ));
    }
    Ok(HttpResponse::Ok().json(UsageSeries {
        from: range.from_timestamp(),
        to: range.to_timestamp(),
        granularity: period,
        group_by,
        points: rows.into_iter().map(UsagePoint::from).collect(),
    }))
}

#[cfg(test)]
mod columns {
    use super::*;
    use tally_schema::queries::{self as q, assert_columns, assert_columns_after_prefix};

    #[test]
    fn rows_read_the_columns_their_queries_return() {
        assert_columns_after_prefix::<TotalsRow>(&q::METRICS_TOTALS, "total_");
        assert_columns::<SessionsRow>(&q::SESSIONS_STARTED);
        assert_columns_after_prefix::<UsagePointRow>(&q::METRICS_USAGE, "total_");
    }
}
