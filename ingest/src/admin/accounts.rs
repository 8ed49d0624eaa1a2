//! Admin routes (admin key of the account's project only):
//! `GET|PUT /v1/admin/accounts/{account_id}` read and set an account's plan and overrides;
//! `POST /v1/admin/accounts/{account_id}/adjustments` credits or debits its usage.
//!
//! Settings go to the compacted topic `tally.quota.v1`, which is both where they persist and
//! how every replica learns them. An adjustment is an event like any other (type
//! `usage_adjustment`), so the rollups, the quota counters and a rebuild all include it.

use crate::admin::AdminState;
use crate::auth::Scope;
use crate::body::read_small_json;
use crate::error::ApiError;
use crate::quota::check::account_id;
use crate::ratelimit::RouteGroup;
use crate::write::sink::SinkRecord;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use tally_quota::{AccountSettings, PlanLimits, QuotaRecord};
use tally_schema::event::{Adjustment, Event, Timestamp};
use tally_schema::money::json_signed_usd_nanos;
use tally_schema::Envelope;

/// The largest adjustment, either way: a trillion tokens or a million USD. Sums of many stay
/// far inside 64 bits (and every fold adds with saturation anyway).
const MAX_ADJUSTMENT_TOKENS: u64 = 1_000_000_000_000;
const MAX_ADJUSTMENT_NANOS: u64 = 1_000_000 * 1_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsBody {
    /// A configured plan; absent keeps the account on the default plan.
    #[serde(default)]
    plan: Option<String>,
    /// Limits replacing the plan's; absent clears every override.
    #[serde(default)]
    overrides: PlanLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdjustmentBody {
    /// Tokens to add to the account's usage; negative is a credit.
    #[serde(default, deserialize_with = "tally_quota::numbers::i64")]
    tokens: i64,
    /// USD to add to the account's cost; negative is a credit.
    #[serde(default)]
    cost_usd: Option<serde_json::Number>,
    /// Why, for the record.
    reason: String,
    /// Makes a retried request count once (a UUID; generated when absent).
    #[serde(default)]
    adjustment_id: Option<uuid::Uuid>,
}

fn settings_json(
    state: &AdminState,
    account: &str,
    settings: Option<&AccountSettings>,
) -> serde_json::Value {
    let (plan, effective) = state.quota.config.effective_limits(settings);
    json!({
        "account_id": account,
        "plan": plan,
        "overrides": settings.map(|s| s.overrides.clone()).unwrap_or_default(),
        "limits": effective.limits,
        "thresholds": effective.thresholds,
    })
}

pub async fn get_account(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let principal = state
        .gate
        .admit(&request, Scope::Admin, RouteGroup::Admin)?;
    let account = account_id(&principal, &path.into_inner())?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let settings = state
        .quota
        .lookup(&principal.project_id, &account, now_ms)
        .settings;
    Ok(HttpResponse::Ok().json(settings_json(&state, &account, settings.as_ref())))
}

pub async fn put_account(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = state
        .gate
        .admit(&request, Scope::Admin, RouteGroup::Admin)?;
    let account = account_id(&principal, &path.into_inner())?;
    let body: SettingsBody = read_small_json(&request, payload).await?;
    if let Some(plan) = &body.plan {
        if !state.quota.config.plans.contains_key(plan) {
            let known: Vec<&String> = state.quota.config.plans.keys().collect();
            return Err(ApiError::invalid_field(
                "plan",
                format!("{plan:?} is not a configured plan (one of {known:?})"),
            ));
        }
    }
    let settings = AccountSettings {
        plan: body.plan,
        overrides: body.overrides,
    };
    state
        .quota
        .publish(QuotaRecord::Settings {
            project_id: principal.project_id.clone(),
            account_id: account.clone(),
            settings: settings.clone(),
            updated_at_ms: chrono::Utc::now().timestamp_millis(),
        })
        .await?;
    tracing::info!(project = %principal.project_id, "account settings changed");
    Ok(HttpResponse::Ok().json(settings_json(&state, &account, Some(&settings))))
}

pub async fn adjust_usage(
    state: web::Data<AdminState>,
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let principal = state
        .gate
        .admit(&request, Scope::Admin, RouteGroup::Admin)?;
    let account = account_id(&principal, &path.into_inner())?;
    let body: AdjustmentBody = read_small_json(&request, payload).await?;
    let cost_nanos = match &body.cost_usd {
        None => None,
        Some(n) => Some(json_signed_usd_nanos(n).ok_or_else(|| {
            ApiError::invalid_field("cost_usd", "must be an amount of US dollars")
        })?),
    };
    if body.tokens.unsigned_abs() > MAX_ADJUSTMENT_TOKENS {
        return Err(ApiError::invalid_field(
            "tokens",
            format!("at most {MAX_ADJUSTMENT_TOKENS} either way"),
        ));
    }
    if cost_nanos.is_some_and(|c| c.unsigned_abs() > MAX_ADJUSTMENT_NANOS) {
        return Err(ApiError::invalid_field(
            "cost_usd",
            "at most 1000000 USD either way",
        ));
    }
    if body.reason.trim().is_empty() || body.reason.chars().count() > 512 {
        return Err(ApiError::invalid_field(
            "reason",
            "must be 1 to 512 characters",
        ));
    }
    if body.tokens == 0 && cost_nanos.unwrap_or(0) == 0 {
        return Err(ApiError::invalid_field(
            "tokens",
            "an adjustment needs tokens or cost_usd other than zero",
        ));
    }
    let event_id = body
        .adjustment_id
        .unwrap_or_else(uuid::Uuid::new_v4)
        .to_string();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let adjustment = Adjustment {
        tokens: body.tokens,
        cost_nanos,
        reason: body.reason,
    };
    let event = Event::usage_adjustment(
        event_id.clone(),
        account.clone(),
        Timestamp(now_ms),
        adjustment,
    );
    let envelope = Envelope::new(&principal.project_id, now_ms, event);
    let record = SinkRecord {
        key: envelope.key(),
        payload: envelope.encode(),
    };
    state.sink.publish(vec![record]).await.map_err(|err| {
        tracing::warn!(%err, "adjustment not acknowledged by Kafka");
        ApiError::from_sink(err, state.gate.config.producer.retry_after_secs)
    })?;
    Ok(HttpResponse::Ok().json(json!({
        "adjustment_id": event_id,
        "account_id": account,
        "tokens": body.tokens,
        "cost_usd": cost_nanos.map(tally_schema::money::nanos_to_json),
    })))
}
