//! `GET /v1/usage/{account_id}`: an account's usage per window against its limits (from the
//! quota view), this month's breakdown by model and operation, the last 30 days and a trend
//! (from the daily rollup).

use crate::auth::Scope;
use crate::error::ApiError;
use crate::quota::check::{account_id, limit_json};
use crate::ratelimit::RouteGroup;
use crate::read::ReadState;
use actix_web::{web, HttpRequest, HttpResponse};
use clickhouse::Row;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use tally_quota::{evaluate, CheckRequest, LimitStatus, WindowStarts};
use tally_schema::event::Timestamp;
use tally_schema::money::nanos_to_json;
use tally_schema::queries::params::{self, prepare};

/// Days of history in the answer.
const HISTORY_DAYS: i64 = 30;
/// The trend compares the last 7 whole days with the 7 before; a change beyond 10 % either
/// way is a direction, anything smaller is stable.
const TREND_DAYS: i64 = 7;
const TREND_PERCENT: u64 = 10;

#[derive(Debug, Row, Deserialize)]
struct DailyUsage {
    day_start: u32,
    model: String,
    operation: String,
    tokens: u64,
    adjusted_tokens: i64,
    cost_nanos: i64,
    requests: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    tokens: i64,
    cost_nanos: i64,
    requests: u64,
}

impl Totals {
    fn add(&mut self, row: &DailyUsage) {
        let tokens = i64::try_from(row.tokens)
            .unwrap_or(i64::MAX)
            .saturating_add(row.adjusted_tokens);
        self.tokens = self.tokens.saturating_add(tokens);
        self.cost_nanos = self.cost_nanos.saturating_add(row.cost_nanos);
        self.requests = self.requests.saturating_add(row.requests);
    }

    fn json(&self) -> Value {
        json!({
            "tokens": self.tokens.max(0),
            // A credit larger than the usage shows as zero, as tokens do.
            "cost_usd": nanos_to_json(self.cost_nanos.max(0)),
            "requests": self.requests,
        })
    }
}

pub async fn get_usage(
    state: web::Data<ReadState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = state.gate.admit(&request, Scope::Read, RouteGroup::Read)?;
    let account_id = account_id(&principal, &path.into_inner())?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let quota = &state.quota;
    let crate::quota::Lookup {
        settings,
        usage,
        tracked,
    } = quota.lookup(&principal.project_id, &account_id, now_ms);
    let (plan_name, plan) = quota.config.effective_limits(settings.as_ref());
    let decision = evaluate(
        &quota.config,
        &plan_name,
        &plan,
        &usage,
        &CheckRequest::default(),
        now_ms,
    );
    let mut status = LimitStatus::Ok;
    let limits: Vec<Value> = decision
        .limits
        .iter()
        .map(|limit| {
            // Usage as it stands, without the one request a check would add.
            let mut limit = limit.clone();
            let used = i64::try_from(limit.used).unwrap_or(i64::MAX);
            limit.status = LimitStatus::of(used, limit.limit, &plan.thresholds);
            status = status.max(limit.status);
            limit_json(&limit, now_ms)
        })
        .collect();

    let windows = WindowStarts::at(now_ms);
    let today = windows.day;
    let first_day = (today - (HISTORY_DAYS - 1) * 86_400).min(windows.month);
    let daily_usage = params::AccountDailyUsage {
        project_id: &principal.project_id,
        account_id: &account_id,
        first_day: u32::try_from(first_day).unwrap_or(0),
    };
    let rows: Vec<DailyUsage> = prepare(&state.clickhouse, daily_usage).fetch_all().await?;

    let mut daily: BTreeMap<i64, Totals> = (0..HISTORY_DAYS)
        .map(|i| (today - i * 86_400, Totals::default()))
        .collect();
    let mut by_model: BTreeMap<&str, Totals> = BTreeMap::new();
    let mut by_operation: BTreeMap<&str, Totals> = BTreeMap::new();
    for row in &rows {
        let day = i64::from(row.day_start);
        if let Some(totals) = daily.get_mut(&day) {
            totals.add(row);
        }
        if day >= windows.month {
            by_model.entry(&row.model).or_default().add(row);
            by_operation.entry(&row.operation).or_default().add(row);
        }
    }
    let sum_days = |from: i64, to: i64| -> i64 {
        (from..to)
            .filter_map(|i| daily.get(&(today - i * 86_400)))
            .map(|t| t.tokens.max(0))
            .sum()
    };
    let last = sum_days(1, 1 + TREND_DAYS);
    let previous = sum_days(1 + TREND_DAYS, 1 + 2 * TREND_DAYS);
    let direction = trend(last, previous);
    let named = |map: &BTreeMap<&str, Totals>, field: &str| -> Vec<Value> {
        map.iter()
            .map(|(name, totals)| {
                let mut value = totals.json();
                value[field] = json!(name);
                value
            })
            .collect()
    };

    Ok(HttpResponse::Ok().json(json!({
        "account_id": account_id,
        "plan": plan_name,
        "status": status.as_str(),
        "stale": quota.is_stale(now_ms),
        "tracked": tracked,
        "limits": limits,
        "windows": {
            "minute": {"requests": usage.minute_requests, "tokens": usage.minute_tokens},
            "hour": {"start": Timestamp(windows.hour * 1000).to_rfc3339(), "tokens": usage.hour_tokens.max(0)},
            "day": {"start": Timestamp(windows.day * 1000).to_rfc3339(), "tokens": usage.day_tokens.max(0)},
            "month": {
                "start": Timestamp(windows.month * 1000).to_rfc3339(),
                "tokens": usage.month_tokens.max(0),
                "cost_usd": nanos_to_json(usage.month_cost_nanos.max(0)),
            },
        },
        "breakdown": {
            "period": "month",
            "by_model": named(&by_model, "model"),
            "by_operation": named(&by_operation, "operation"),
        },
        "daily": daily.iter().map(|(day, totals)| {
            let mut value = totals.json();
            value["day"] = json!(Timestamp(day * 1000).to_rfc3339()[..10]);
            value
        }).collect::<Vec<_>>(),
        "trend": {
            "direction": direction,
            "last_7_days_tokens": last,
            "previous_7_days_tokens": previous,
            "rule": "tokens of the last 7 whole days against the 7 before: more than 10 % up is increasing, more than 10 % down is decreasing, else stable",
        },
    })))
}

/// The trend of `last` against `previous` (see [`TREND_PERCENT`]).
fn trend(last: i64, previous: i64) -> &'static str {
    let (last, previous) = (last.max(0) as u64, previous.max(0) as u64);
    if last * 100 > previous * (100 + TREND_PERCENT) {
        "increasing"
    } else if last * 100 < previous * (100 - TREND_PERCENT) {
        "decreasing"
    } else {
        "stable"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn trend_needs_more_than_ten_percent() {
        assert_eq!(super::trend(111, 100), "increasing");
        assert_eq!(super::trend(110, 100), "stable");
        assert_eq!(super::trend(89, 100), "decreasing");
        assert_eq!(super::trend(0, 0), "stable");
        assert_eq!(super::trend(1, 0), "increasing");
    }
}

#[cfg(test)]
mod columns {
    use super::*;
    use tally_schema::queries::{self as q, assert_columns};

    #[test]
    fn rows_read_the_columns_their_queries_return() {
        assert_columns::<DailyUsage>(&q::ACCOUNT_DAILY_USAGE);
    }
}
