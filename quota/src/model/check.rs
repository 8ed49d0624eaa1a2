//! The quota decision: an account's usage, its effective limits and one request's estimate in,
//! an answer out. Pure, so every replica answers the same from the same view.

use super::records::{CounterRecord, Window, WindowStarts, MINUTE_SLOTS};
use super::{Plan, QuotaConfig, Thresholds};
use serde::Serialize;

/// What a caller asks before an LLM call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckRequest {
    pub model: Option<String>,
    pub operation: Option<String>,
    /// Tokens the call is expected to use; they count against the token limits checked.
    pub estimated_tokens: u64,
    /// Expected cost in nano-USD; it counts against the cost limit.
    pub estimated_cost_nanos: i64,
}

/// Why a check was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    TokensPerDayExceeded,
    TokensPerMonthExceeded,
    CostPerMonthExceeded,
    TokensPerHourExceeded,
    RequestsPerMinuteExceeded,
    TokensPerMinuteExceeded,
    TokensPerRequestExceeded,
    ModelNotAllowed,
    OperationNotInPlan,
    QuotaViewStale,
    QuotaAccountCap,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Self::TokensPerDayExceeded,
        Self::TokensPerMonthExceeded,
        Self::CostPerMonthExceeded,
        Self::TokensPerHourExceeded,
        Self::RequestsPerMinuteExceeded,
        Self::TokensPerMinuteExceeded,
        Self::TokensPerRequestExceeded,
        Self::ModelNotAllowed,
        Self::OperationNotInPlan,
        Self::QuotaViewStale,
        Self::QuotaAccountCap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokensPerDayExceeded => "tokens_per_day_exceeded",
            Self::TokensPerMonthExceeded => "tokens_per_month_exceeded",
            Self::CostPerMonthExceeded => "cost_per_month_exceeded",
            Self::TokensPerHourExceeded => "tokens_per_hour_exceeded",
            Self::RequestsPerMinuteExceeded => "requests_per_minute_exceeded",
            Self::TokensPerMinuteExceeded => "tokens_per_minute_exceeded",
            Self::TokensPerRequestExceeded => "tokens_per_request_exceeded",
            Self::ModelNotAllowed => "model_not_allowed",
            Self::OperationNotInPlan => "operation_not_in_plan",
            Self::QuotaViewStale => "quota_view_stale",
            Self::QuotaAccountCap => "quota_account_cap",
        }
    }

    /// Whether a bigger plan is the way out (not for the sliding minute, which passes).
    fn wants_upgrade(self) -> bool {
        !matches!(
            self,
            Self::RequestsPerMinuteExceeded
                | Self::TokensPerMinuteExceeded
                | Self::QuotaViewStale
                | Self::QuotaAccountCap
        )
    }
}

/// How close an account is to its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitStatus {
    Ok,
    Warning,
    Critical,
    Exceeded,
}

impl LimitStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Critical => "critical",
            Self::Exceeded => "exceeded",
        }
    }

    /// The status of `used` against `limit` (a zero limit is exceeded by any use).
    pub fn of(used: i64, limit: u64, thresholds: &Thresholds) -> Self {
        let percent = percent_of(used, limit);
        if percent >= f64::from(thresholds.exceeded_percent) {
            Self::Exceeded
        } else if percent >= f64::from(thresholds.critical_percent) {
            Self::Critical
        } else if percent >= f64::from(thresholds.warning_percent) {
            Self::Warning
        } else {
            Self::Ok
        }
    }
}

/// `used` as a percentage of `limit`.
pub fn percent_of(used: i64, limit: u64) -> f64 {
    match (used.max(0), limit) {
        (0, _) => 0.0,
        (_, 0) => f64::INFINITY,
        (used, limit) => used as f64 * 100.0 / limit as f64,
    }
}

/// An account's usage in the windows around a moment, summed over partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccountUsage {
    pub day_tokens: i64,
    pub month_tokens: i64,
    pub month_cost_nanos: i64,
    pub hour_tokens: i64,
    pub minute_requests: u64,
    pub minute_tokens: u64,
    /// The oldest second with minute usage; the sliding minute lightens at `oldest + 60`.
    pub minute_oldest_sec: Option<i64>,
}

impl AccountUsage {
    /// Sums counters whose windows are the ones around `now_ms`.
    pub fn sum<'a>(counters: impl IntoIterator<Item = &'a CounterRecord>, now_ms: i64) -> Self {
        let w = WindowStarts::at(now_ms);
        let now_sec = now_ms.div_euclid(1000);
        let mut usage = AccountUsage::default();
        for c in counters {
            let (hour, day, month) = (
                c.total(Window::Hour, w.hour),
                c.total(Window::Day, w.day),
                c.total(Window::Month, w.month),
            );
            usage.hour_tokens = usage.hour_tokens.saturating_add(hour.tokens);
            usage.day_tokens = usage.day_tokens.saturating_add(day.tokens);
            usage.month_tokens = usage.month_tokens.saturating_add(month.tokens);
            usage.month_cost_nanos = usage.month_cost_nanos.saturating_add(month.cost_nanos);
            for slot in c.seconds.iter().filter(|s| s.sec > now_sec - MINUTE_SLOTS) {
                usage.minute_requests = usage.minute_requests.saturating_add(slot.requests);
                usage.minute_tokens = usage.minute_tokens.saturating_add(slot.tokens);
                usage.minute_oldest_sec = Some(
                    usage
                        .minute_oldest_sec
                        .map_or(slot.sec, |o| o.min(slot.sec)),
                );
            }
        }
        usage
    }

    /// Adds requests and tokens this replica admitted that the view may not show yet.
    pub fn with_local(mut self, requests: u64, tokens: u64, oldest_sec: Option<i64>) -> Self {
        self.minute_requests = self.minute_requests.max(requests);
        self.minute_tokens = self.minute_tokens.max(tokens);
        self.minute_oldest_sec = match (self.minute_oldest_sec, oldest_sec) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }
}

/// One limit as the answer shows it. Amounts are tokens, requests, or nano-USD (`unit`).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitState {
    pub name: &'static str,
    pub window: &'static str,
    pub unit: &'static str,
    pub limit: u64,
    pub used: u64,
    pub remaining: u64,
    /// When the window resets (unix ms); for the sliding minute, when its oldest use leaves.
    pub resets_at_ms: Option<i64>,
    /// Status of `used` plus this request's share.
    pub status: LimitStatus,
}

/// The answer to a check.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Option<Reason>,
    pub status: LimitStatus,
    pub plan: String,
    pub limits: Vec<LimitState>,
    pub requires_upgrade: bool,
    /// Index into `limits` of the limit with the least room left.
    pub tightest: Option<usize>,
}

/// Decides a check. `usage` is the account's current usage; the request's estimate (and one
/// request) count against the limits, and the first limit it would pass is the reason.
pub fn evaluate(
    config: &QuotaConfig,
    plan_name: &str,
    plan: &Plan,
    usage: &AccountUsage,
    request: &CheckRequest,
    now_ms: i64,
) -> Decision {
    let limits = &plan.limits;
    let w = WindowStarts::at(now_ms);
    let estimate = i64::try_from(request.estimated_tokens).unwrap_or(i64::MAX);
    let minute_reset = usage
        .minute_oldest_sec
        .map(|s| (s + MINUTE_SLOTS) * 1000)
        .or(Some(now_ms + MINUTE_SLOTS * 1000));
    let windowed = [
        (
            limits.tokens_per_request,
            "tokens_per_request",
            "request",
            "tokens",
            0,
            estimate,
            None,
            Reason::TokensPerRequestExceeded,
        ),
        (
            limits.requests_per_minute,
            "requests_per_minute",
            "minute",
            "requests",
            usage.minute_requests as i64,
            1,
            minute_reset,
            Reason::RequestsPerMinuteExceeded,
        ),
        (
            limits.tokens_per_minute,
            "tokens_per_minute",
            "minute",
            "tokens",
            usage.minute_tokens as i64,
            estimate,
            minute_reset,
            Reason::TokensPerMinuteExceeded,
        ),
        (
            limits.tokens_per_hour,
            "tokens_per_hour",
            "hour",
            "tokens",
            usage.hour_tokens,
            estimate,
            Some(w.next_hour * 1000),
            Reason::TokensPerHourExceeded,
        ),
        (
            limits.tokens_per_day,
            "tokens_per_day",
            "day",
            "tokens",
            usage.day_tokens,
            estimate,
            Some(w.next_day * 1000),
            Reason::TokensPerDayExceeded,
        ),
        (
            limits.tokens_per_month,
            "tokens_per_month",
            "month",
            "tokens",
            usage.month_tokens,
            estimate,
            Some(w.next_month * 1000),
            Reason::TokensPerMonthExceeded,
        ),
        (
            limits.cost_per_month_usd.map(|u| u.0.max(0) as u64),
            "cost_per_month_usd",
            "month",
            "usd",
            usage.month_cost_nanos,
            request.estimated_cost_nanos.max(0),
            Some(w.next_month * 1000),
            Reason::CostPerMonthExceeded,
        ),
    ];
    let mut states = Vec::new();
    let mut reason = None;
    let mut tightest: Option<(usize, f64)> = None;
    for (limit, name, window, unit, used, share, resets_at_ms, why) in windowed {
        let Some(limit) = limit else { continue };
        let used = used.max(0);
        let after = used.saturating_add(share);
        if after > i64::try_from(limit).unwrap_or(i64::MAX) && reason.is_none() {
            reason = Some(why);
        }
        let percent = percent_of(after, limit);
        if name != "tokens_per_request" && tightest.is_none_or(|(_, p)| percent > p) {
            tightest = Some((states.len(), percent));
        }
        let used = u64::try_from(used).unwrap_or(0);
        states.push(LimitState {
            name,
            window,
            unit,
            limit,
            used,
            remaining: limit.saturating_sub(used),
            resets_at_ms,
            status: LimitStatus::of(after, limit, &plan.thresholds),
        });
    }
    if let Some(model) = request.model.as_deref() {
        if reason.is_none() && !limits.allows_model(model) {
            reason = Some(Reason::ModelNotAllowed);
        }
    }
    if let Some(operation) = request.operation.as_deref() {
        if reason.is_none() && !config.allows_operation(plan_name, operation) {
            reason = Some(Reason::OperationNotInPlan);
        }
    }
    let worst = states
        .iter()
        .map(|s| s.status)
        .max()
        .unwrap_or(LimitStatus::Ok);
    // A refusal by a limit shows as exceeded; a model or operation refusal keeps the usage status.
    let by_limit =
        reason.is_some_and(|r| !matches!(r, Reason::ModelNotAllowed | Reason::OperationNotInPlan));
    let status = if by_limit {
        LimitStatus::Exceeded.max(worst)
    } else {
        worst
    };
    Decision {
        allowed: reason.is_none(),
        requires_upgrade: reason.is_some_and(|r| r.wants_upgrade()) && plan.upgradable,
        reason,
        status,
        plan: plan_name.to_owned(),
        limits: states,
        tightest: tightest.map(|(i, _)| i),
    }
}
