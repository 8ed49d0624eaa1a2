//! `POST /v1/quota/check`: may this account make this LLM call now?

use super::QuotaState;
use crate::auth::{Principal, Scope};
use crate::body::read_small_json;
use crate::error::ApiError;
use crate::quota::CheckState;
use crate::ratelimit::RouteGroup;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Instant;
use tally_quota::{evaluate, CheckRequest, Decision, LimitState, Reason};
use tally_schema::event::Timestamp;
use tally_schema::money::{json_usd_nanos, nanos_to_json};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    pub account_id: String,
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    #[serde(default, deserialize_with = "tally_quota::numbers::u64")]
    pub estimated_tokens: u64,
    #[serde(default)]
    pub estimated_cost_usd: Option<serde_json::Number>,
}

pub async fn post_check(
    state: web::Data<CheckState>,
    request: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = state
        .gate
        .admit(&request, Scope::Ingest, RouteGroup::Quota)?;
    let body: CheckBody = read_small_json(&request, payload).await?;
    let account_id = account_id(&principal, &body.account_id)?;
    let estimated_cost_nanos = match &body.estimated_cost_usd {
        None => 0,
        Some(n) => json_usd_nanos(n).ok_or_else(|| {
            ApiError::invalid_field("estimated_cost_usd", "must be a non-negative USD amount")
        })?,
    };
    for (field, value) in [("model", &body.model), ("operation", &body.operation)] {
        if value
            .as_ref()
            .is_some_and(|v| v.is_empty() || v.chars().count() > 128)
        {
            return Err(ApiError::invalid_field(
                field,
                "must be 1 to 128 characters",
            ));
        }
    }
    let check = CheckRequest {
        model: body.model,
        operation: body.operation,
        estimated_tokens: body.estimated_tokens,
        estimated_cost_nanos,
    };
    let started = Instant::now();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let quota = &state.quota;
    let (decision, view) = decide(quota, &principal.project_id, &account_id, &check, now_ms);
    state
        .gate
        .metrics
        .quota_check_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = if decision.allowed {
        "allowed"
    } else {
        "refused"
    };
    let reason = decision.reason.map_or("", Reason::as_str);
    state
        .gate
        .metrics
        .quota_checks
        .with_label_values(&[outcome, reason])
        .inc();
    Ok(respond(&decision, view, now_ms))
}

/// What the answer says of the view it was decided from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ViewState {
    pub stale: bool,
    pub tracked: bool,
}

/// Decides, and counts an admitted request in this replica's minute.
pub(super) fn decide(
    quota: &QuotaState,
    project_id: &str,
    account_id: &str,
    check: &CheckRequest,
    now_ms: i64,
) -> (Decision, ViewState) {
    let super::Lookup {
        settings,
        usage,
        tracked,
    } = quota.lookup(project_id, account_id, now_ms);
    let (plan_name, plan) = quota.config.effective_limits(settings.as_ref());
    let mut decision = evaluate(&quota.config, &plan_name, &plan, &usage, check, now_ms);
    let stale = quota.is_stale(now_ms);
    // Failing closed: an answer the view cannot stand behind is a refusal.
    let unsure = if stale {
        Some(Reason::QuotaViewStale)
    } else if !tracked {
        Some(Reason::QuotaAccountCap)
    } else {
        None
    };
    if let (Some(reason), false, true) = (unsure, quota.config.fail_open, decision.allowed) {
        decision.allowed = false;
        decision.reason = Some(reason);
        decision.requires_upgrade = false;
    }
    if decision.allowed {
        quota.local.record(
            project_id,
            account_id,
            now_ms / 1000,
            check.estimated_tokens,
        );
    }
    (decision, ViewState { stale, tracked })
}

/// The account id as stored: checked, and hashed when the project hashes account ids.
pub(crate) fn account_id(principal: &Principal, raw: &str) -> Result<String, ApiError> {
    if raw.is_empty() || raw.chars().count() > 128 {
        return Err(ApiError::invalid_field(
            "account_id",
            "must be 1 to 128 characters",
        ));
    }
    Ok(principal.redact.account_id(&principal.project_id, raw))
}

pub(crate) fn limit_json(limit: &LimitState, now_ms: i64) -> Value {
    let amount = |n: u64| match limit.unit {
        "usd" => nanos_to_json(i64::try_from(n).unwrap_or(i64::MAX)),
        _ => Value::from(n),
    };
    json!({
        "name": limit.name,
        "window": limit.window,
        "unit": limit.unit,
        "limit": amount(limit.limit),
        "used": amount(limit.used),
        "remaining": amount(limit.remaining),
        "percent_used": percent(limit.used, limit.limit),
        "status": limit.status.as_str(),
        "resets_at": limit.resets_at_ms.map(|ms| Timestamp(ms.max(now_ms)).to_rfc3339()),
    })
}

fn percent(used: u64, limit: u64) -> f64 {
    let p = tally_quota::percent_of(i64::try_from(used).unwrap_or(i64::MAX), limit);
    if p.is_finite() {
        (p * 100.0).round() / 100.0
    } else {
        100.0
    }
}

fn respond(decision: &Decision, view: ViewState, now_ms: i64) -> HttpResponse {
    let mut response = HttpResponse::Ok();
    if let Some(tightest) = decision.tightest.map(|i| &decision.limits[i]) {
        let amount = |n: u64| match tightest.unit {
            "usd" => nanos_to_json(i64::try_from(n).unwrap_or(i64::MAX)).to_string(),
            _ => n.to_string(),
        };
        response.insert_header(("X-Quota-Limit", amount(tightest.limit)));
        response.insert_header(("X-Quota-Remaining", amount(tightest.remaining)));
        if let Some(at) = tightest.resets_at_ms {
            let secs = ((at - now_ms).max(0) + 999) / 1000;
            response.insert_header(("X-Quota-Reset", secs.to_string()));
        }
    }
    response.json(json!({
        "allowed": decision.allowed,
        "reason": decision.reason.map(Reason::as_str),
        "status": decision.status.as_str(),
        "plan": decision.plan,
        "limits": decision.limits.iter().map(|l| limit_json(l, now_ms)).collect::<Vec<_>>(),
        "requires_upgrade": decision.requires_upgrade,
        "stale": view.stale,
        "tracked": view.tracked,
    }))
}
