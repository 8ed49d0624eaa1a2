//! `GET /v1/metrics/latency`, `/v1/metrics/tools` and `/v1/metrics/cost`: latency
//! percentiles from the rollups' histograms, tool analytics from the tool rollup, and cost
//! broken down by model, operation, account and day.

use super::metrics::{hour_range, read_request, rollup_filters, usage_points, GroupBy, Period};
use super::rollup::{
    add_histogram, Accuracy, LatencyStats, MetricsCost, MetricsLatency, RollupRange, RollupScope,
    ACCURACY,
};
use crate::error::ApiError;
use crate::read::ReadState;
use actix_web::{web, HttpRequest, HttpResponse};
use clickhouse::Row;
use serde::{Deserialize, Serialize};
use tally_schema::event::{Timestamp, Usage};
use tally_schema::money::nanos_to_json;
use tally_schema::queries::params::{self, prepare};

#[derive(Debug, Row, Deserialize)]
struct LatencyRow {
    model: String,
    duration_count: u64,
    duration_sum_ms: u64,
    duration_hist: Vec<u64>,
    ttft_count: u64,
    ttft_sum_ms: u64,
    ttft_hist: Vec<u64>,
}

/// LLM response latency of one model, or of all.
#[derive(Debug, Serialize)]
pub struct ModelLatency {
    /// Null in `overall`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// From request to the whole response (`duration_ms` of `llm_response` events).
    pub duration: LatencyStats,
    /// To the first token (`time_to_first_token_ms`).
    pub time_to_first_token: LatencyStats,
}

#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub from: Timestamp,
    pub to: Timestamp,
    pub accuracy: Accuracy,
    pub overall: ModelLatency,
    /// Models with at least one measured latency, by name.
    pub by_model: Vec<ModelLatency>,
}

pub async fn latency(
    request: HttpRequest,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let (principal, params) = read_request(
        &request,
        &state,
        &["from", "to", "account_id", "model", "operation"],
    )?;
    let range = hour_range(&params)?;
    let filters = rollup_filters(&principal, &params, true)?;
    let rollups = RollupRange::split(range);
    let scope = RollupScope {
        project_id: &principal.project_id,
        range: &rollups,
        filters: &filters,
    };
    let rows = prepare(&state.clickhouse, MetricsLatency(scope))
        .fetch_all::<LatencyRow>()
        .await?;

    // Histograms add up exactly, so the overall figures come from the models' sums.
    let (mut duration, mut ttft) = ((0, 0, Vec::new()), (0, 0, Vec::new()));
    let mut by_model = Vec::with_capacity(rows.len());
    for row in rows {
        duration.0 += row.duration_count;
        duration.1 += row.duration_sum_ms;
        add_histogram(&mut duration.2, &row.duration_hist);
        ttft.0 += row.ttft_count;
        ttft.1 += row.ttft_sum_ms;
        add_histogram(&mut ttft.2, &row.ttft_hist);
        by_model.push(ModelLatency {
            model: Some(row.model),
            duration: LatencyStats::of(row.duration_count, row.duration_sum_ms, &row.duration_hist),
            time_to_first_token: LatencyStats::of(row.ttft_count, row.ttft_sum_ms, &row.ttft_hist),
        });
    }
    Ok(HttpResponse::Ok().json(LatencyReport {
        from: range.from_timestamp(),
        to: range.to_timestamp(),
        accuracy: ACCURACY,
        overall: ModelLatency {
            model: None,
            duration: LatencyStats::of(duration.0, duration.1, &duration.2),
            time_to_first_token: LatencyStats::of(ttft.0, ttft.1, &ttft.2),
        },
        by_model,
    }))
}

#[derive(Debug, Row, Deserialize)]
struct ToolRow {
    tool_name: String,
    calls: u64,
    results: u64,
    errors: u64,
    duration_count: u64,
    duration_sum_ms: u64,
    duration_hist: Vec<u64>,
}

#[derive(Debug, Serialize)]
pub struct ToolStats {
    pub tool: String,
    /// `tool_call` events.
    pub calls: u64,
    /// `tool_result` events.
    pub results: u64,
    /// Failed tool events: status `error`, or an `error` event naming the tool.
    pub errors: u64,
    /// `(calls − errors) / calls`, at least 0; null without calls.
    pub success_rate: Option<f64>,
    /// Durations of the results (`duration_ms` of `tool_result` events).
    pub duration: LatencyStats,
}

#[derive(Debug, Serialize)]
pub struct ToolReport {
    pub from: Timestamp,
    pub to: Timestamp,
    pub accuracy: Accuracy,
    /// Tools used in the range, by name.
    pub tools: Vec<ToolStats>,
}

pub async fn tools(
    request: HttpRequest,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let (principal, params) = read_request(&request, &state, &["from", "to", "tool"])?;
    let range = hour_range(&params)?;
    let tool = params.id("tool")?.unwrap_or_default();
    // Tools are rolled up by the hour only.
    let tools_of = params::MetricsTools {
        project_id: &principal.project_id,
        from: range.from,
        to: range.to,
        tool: &tool,
    };
    let rows = prepare(&state.clickhouse, tools_of)
        .fetch_all::<ToolRow>()
        .await?;
    let tools = rows
        .into_iter()
        .map(|row| ToolStats {
            success_rate: (row.calls > 0)
                .then(|| row.calls.saturating_sub(row.errors) as f64 / row.calls as f64),
            duration: LatencyStats::of(row.duration_count, row.duration_sum_ms, &row.duration_hist),
            tool: row.tool_name,
            calls: row.calls,
            results: row.results,
            errors: row.errors,
        })
        .collect();
    Ok(HttpResponse::Ok().json(ToolReport {
        from: range.from_timestamp(),
        to: range.to_timestamp(),
        accuracy: ACCURACY,
        tools,
    }))
}

#[derive(Debug, Row, Deserialize)]
struct CostRow {
    group_key: String,
    cost_nanos: i64,
    provided_cost_nanos: i64,
    unpriced_events: u64,
    llm_requests: u64,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
    cache_write_tokens: u64,
    adjusted_tokens: i64,
}

/// Cost and what it was spent on.
#[derive(Debug, Serialize)]
pub struct CostFigures {
    pub cost_usd: serde_json::Value,
    pub provided_cost_usd: serde_json::Value,
    pub unpriced_events: u64,
    pub llm_calls: u64,
    pub usage: Usage,
    /// Signed tokens of usage adjustments (credits are negative).
    pub adjusted_tokens: i64,
}

/// Sums of the rollups' cost columns, in nano-USD and tokens.
#[derive(Debug, Clone, Copy, Default)]
struct CostSums {
    cost: i64,
    provided: i64,
    unpriced: u64,
    llm_calls: u64,
    usage: Usage,
    adjusted_tokens: i64,
}

impl CostSums {
    fn add(&mut self, other: &CostSums) {
        self.cost += other.cost;
        self.provided += other.provided;
        self.unpriced += other.unpriced;
        self.llm_calls += other.llm_calls;
        self.usage.input_tokens += other.usage.input_tokens;
        self.usage.output_tokens += other.usage.output_tokens;
        self.usage.cache_read_tokens += other.usage.cache_read_tokens;
        self.usage.cache_write_tokens += other.usage.cache_write_tokens;
        self.adjusted_tokens += other.adjusted_tokens;
    }

    fn figures(self) -> CostFigures {
        CostFigures {
            cost_usd: nanos_to_json(self.cost),
            provided_cost_usd: nanos_to_json(self.provided),
            unpriced_events: self.unpriced,
            llm_calls: self.llm_calls,
            usage: self.usage,
            adjusted_tokens: self.adjusted_tokens,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct CostShare {
    /// The model, operation or account; null for events without one.
    pub name: Option<String>,
    #[serde(flatten)]
    pub figures: CostFigures,
}

#[derive(Debug, Serialize)]
pub struct CostDay {
    /// Start of the UTC day.
    pub day: Timestamp,
    #[serde(flatten)]
    pub figures: CostFigures,
}

#[derive(Debug, Serialize)]
pub struct CostReport {
    pub from: Timestamp,
    pub to: Timestamp,
    #[serde(flatten)]
    pub total: CostFigures,
    /// Costliest first, at most `limit` entries each.
    pub by_model: Vec<CostShare>,
    pub by_operation: Vec<CostShare>,
    pub by_account: Vec<CostShare>,
    /// In time order; the first and last day may be partial.
    pub by_day: Vec<CostDay>,
    /// The breakdowns that had more entries than `limit` (`by_model`, `by_operation`,
    /// `by_account`).
    pub truncated: Vec<&'static str>,
}

/// Entries of each breakdown unless `limit` says otherwise, and at most.
pub const DEFAULT_BREAKDOWN: u32 = 100;
pub const MAX_BREAKDOWN: u32 = 1_000;

pub async fn cost(
    request: HttpRequest,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let (principal, params) = read_request(
        &request,
        &state,
        &["from", "to", "account_id", "model", "operation", "limit"],
    )?;
    let range = hour_range(&params)?;
    let filters = rollup_filters(&principal, &params, true)?;
    let limit = params.limit(DEFAULT_BREAKDOWN, MAX_BREAKDOWN)?;
    let rollups = RollupRange::split(range);
    let project_id = principal.project_id.as_str();

    let breakdown = |group: GroupBy| {
        let cost = MetricsCost {
            group: group.as_str(),
            scope: RollupScope {
                project_id,
                range: &rollups,
                filters: &filters,
            },
            limit: u64::from(limit) + 1,
        };
        let query = prepare(&state.clickhouse, cost);
        async move { Ok::<_, ApiError>(query.fetch_all::<CostRow>().await?) }
    };
    // The days' totals are the usage series by the day, ungrouped (at most 368 points).
    let (by_model, by_operation, by_account, days) = futures::try_join!(
        breakdown(GroupBy::Model),
        breakdown(GroupBy::Operation),
        breakdown(GroupBy::Account),
        usage_points(
            &state,
            project_id,
            Period::Day,
            None,
            &rollups,
            &filters,
            400
        ),
    )?;

    let mut truncated = Vec::new();
    let mut shares = |name: &'static str, mut rows: Vec<CostRow>| {
        if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            truncated.push(name);
        }
        rows.into_iter()
            .map(|row| CostShare {
                figures: CostSums {
                    cost: row.cost_nanos,
                    provided: row.provided_cost_nanos,
                    unpriced: row.unpriced_events,
                    llm_calls: row.llm_requests,
                    usage: Usage {
                        input_tokens: row.input_tokens,
                        output_tokens: row.output_tokens,
                        cache_read_tokens: row.cache_read_tokens,
                        cache_write_tokens: row.cache_write_tokens,
                    },
                    adjusted_tokens: row.adjusted_tokens,
                }
                .figures(),
                name: (!row.group_key.is_empty()).then_some(row.group_key),
            })
            .collect::<Vec<_>>()
    };
    let by_model = shares("by_model", by_model);
    let by_operation = shares("by_operation", by_operation);
    let by_account = shares("by_account", by_account);

    // Every event falls in exactly one day, so the days add up to the total.
    let mut total = CostSums::default();
    let by_day = days
        .into_iter()
        .map(|row| {
            let day = CostSums {
                cost: row.cost_nanos,
                provided: row.provided_cost_nanos,
                unpriced: row.unpriced_events,
                llm_calls: row.llm_requests,
                usage: Usage {
                    input_tokens: row.input_tokens,
                    output_tokens: row.output_tokens,
                    cache_read_tokens: row.cache_read_tokens,
                    cache_write_tokens: row.cache_write_tokens,
                },
                adjusted_tokens: row.adjusted_tokens,
            };
            total.add(&day);
            CostDay {
                day: Timestamp(i64::from(row.point) * 1000),
                figures: day.figures(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(CostReport {
        from: range.from_timestamp(),
        to: range.to_timestamp(),
        total: total.figures(),
        by_model,
        by_operation,
        by_account,
        by_day,
        truncated,
    }))
}

#[cfg(test)]
mod columns {
    use super::*;
    use tally_schema::queries::{self as q, assert_columns_after_prefix};

    #[test]
    fn rows_read_the_columns_their_queries_return() {
        assert_columns_after_prefix::<LatencyRow>(&q::METRICS_LATENCY, "total_");
        assert_columns_after_prefix::<ToolRow>(&q::METRICS_TOOLS, "total_");
        assert_columns_after_prefix::<CostRow>(&q::METRICS_COST, "total_");
    }
}
