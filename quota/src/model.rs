//! Quotas as data: plans, per-account overrides, the windows they are counted in, and the
//! counters the aggregator publishes to `tally.quota.v1`.
//!
//! Windows (all UTC):
//! - `day`: the calendar day; resets at 00:00.
//! - `month`: the calendar month; resets at 00:00 on the 1st.
//! - `hour`: the clock hour; resets on the hour.
//! - `minute`: sliding; counts what happened in the last 60 seconds, in one-second slots, so a
//!   request leaves the count 60 s after it was made.
//! - `request`: no window; a cap on one request's estimated tokens.
//!
//! Usage counts every event's `input_tokens + output_tokens` (input includes cache reads and
//! writes), its computed cost, `llm_request` events as requests, and usage adjustments made
//! through the admin API (signed: a credit lowers usage, never below zero).

mod caps;
mod check;
pub mod numbers;
mod records;
#[cfg(test)]
mod tests;

pub use caps::{AccountCaps, AccountTally};
pub use check::{
    evaluate, percent_of, AccountUsage, CheckRequest, Decision, LimitState, LimitStatus, Reason,
};
pub use records::{
    AccountSettings, CounterRecord, QuotaRecord, SecondSlot, Window, WindowStarts, WindowTotal,
    LOOKAHEAD_SECS, MINUTE_SLOTS,
};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use tally_schema::money::{nanos_to_json, parse_usd_nanos};

/// A USD amount kept as integer nano-USD; written as a number (or a decimal string) in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Usd(pub i64);

impl Serialize for Usd {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        nanos_to_json(self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Text {
            Int(u64),
            Float(f64),
            Str(String),
        }
        let text = match Text::deserialize(d)? {
            Text::Int(n) => n.to_string(),
            Text::Float(f) if f.is_finite() && f >= 0.0 => f.to_string(),
            Text::Float(f) => return Err(serde::de::Error::custom(format!("bad USD amount {f}"))),
            Text::Str(s) => s,
        };
        parse_usd_nanos(&text)
            .map(Usd)
            .ok_or_else(|| serde::de::Error::custom(format!("bad USD amount {text:?}")))
    }
}

/// The limits of a plan or of one account. A missing limit means "no limit".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlanLimits {
    /// Tokens (input + output) per calendar UTC day.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers::opt_u64"
    )]
    pub tokens_per_day: Option<u64>,
    /// Tokens per calendar UTC month.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers::opt_u64"
    )]
    pub tokens_per_month: Option<u64>,
    /// Cost in USD per calendar UTC month, by Tally's price table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_per_month_usd: Option<Usd>,
    /// Tokens per clock hour.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers::opt_u64"
    )]
    pub tokens_per_hour: Option<u64>,
    /// LLM requests in any sliding 60 seconds.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers::opt_u64"
    )]
    pub requests_per_minute: Option<u64>,
    /// Tokens in any sliding 60 seconds.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers::opt_u64"
    )]
    pub tokens_per_minute: Option<u64>,
    /// Largest `estimated_tokens` one request may ask for.
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "numbers::opt_u64"
    )]
    pub tokens_per_request: Option<u64>,
    /// Models the account may use; absent means every model. A name ending in `*` is a prefix.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_models: Option<Vec<String>>,
}

impl PlanLimits {
    /// `self` with every limit that `overrides` sets replaced by the override.
    pub fn overridden_by(&self, overrides: &PlanLimits) -> PlanLimits {
        PlanLimits {
            tokens_per_day: overrides.tokens_per_day.or(self.tokens_per_day),
            tokens_per_month: overrides.tokens_per_month.or(self.tokens_per_month),
            cost_per_month_usd: overrides.cost_per_month_usd.or(self.cost_per_month_usd),
            tokens_per_hour: overrides.tokens_per_hour.or(self.tokens_per_hour),
            requests_per_minute: overrides.requests_per_minute.or(self.requests_per_minute),
            tokens_per_minute: overrides.tokens_per_minute.or(self.tokens_per_minute),
            tokens_per_request: overrides.tokens_per_request.or(self.tokens_per_request),
            allowed_models: overrides
                .allowed_models
                .clone()
                .or_else(|| self.allowed_models.clone()),
        }
    }

    pub fn allows_model(&self, model: &str) -> bool {
        self.allowed_models.as_ref().is_none_or(|models| {
            models.iter().any(|m| match m.strip_suffix('*') {
                Some(prefix) => model.starts_with(prefix),
                None => m == model,
            })
        })
    }
}

/// Percentages of a limit at which an account's status changes and an alert is emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub warning_percent: u16,
    pub critical_percent: u16,
    pub exceeded_percent: u16,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            warning_percent: 75,
            critical_percent: 90,
            exceeded_percent: 100,
        }
    }
}

/// A plan: default limits and thresholds for the accounts on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Plan {
    pub limits: PlanLimits,
    pub thresholds: Thresholds,
    /// Where an account of this plan is sent when it needs more (shown as `requires_upgrade`).
    pub upgradable: bool,
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            limits: PlanLimits::default(),
            thresholds: Thresholds::default(),
            upgradable: true,
        }
    }
}

/// The quota settings both services read: plans, the default plan, operations reserved to
/// plans, and how the check behaves when its view is stale.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Plans by name. The defaults are `free`, `pro` and `enterprise`.
    pub plans: BTreeMap<String, Plan>,
    /// The plan of an account that has none set through the admin API.
    pub default_plan: String,
    /// Operations only some plans may use: operation → plans allowed.
    pub reserved_operations: BTreeMap<String, Vec<String>>,
    /// When the view is stale: `true` answers from the last view and allows; `false` refuses
    /// with reason `quota_view_stale`.
    pub fail_open: bool,
    /// Seconds without contact with `tally.quota.v1` after which the view counts as stale.
    pub stale_after_secs: u64,
    pub accounts: AccountCaps,
}

impl Default for QuotaConfig {
    fn default() -> Self {
        let plan = |limits: PlanLimits, upgradable| Plan {
            limits,
            thresholds: Thresholds::default(),
            upgradable,
        };
        let mut plans = BTreeMap::new();
        plans.insert(
            "free".to_owned(),
            plan(
                PlanLimits {
                    tokens_per_day: Some(100_000),
                    tokens_per_month: Some(1_000_000),
                    cost_per_month_usd: Some(Usd(5_000_000_000)),
                    requests_per_minute: Some(20),
                    tokens_per_minute: Some(20_000),
                    tokens_per_request: Some(8_000),
                    ..PlanLimits::default()
                },
                true,
            ),
        );
        plans.insert(
            "pro".to_owned(),
            plan(
                PlanLimits {
                    tokens_per_day: Some(2_000_000),
                    tokens_per_month: Some(40_000_000),
                    cost_per_month_usd: Some(Usd(200_000_000_000)),
                    requests_per_minute: Some(300),
                    tokens_per_minute: Some(200_000),
                    ..PlanLimits::default()
                },
                true,
            ),
        );
        plans.insert(
            "enterprise".to_owned(),
            plan(
                PlanLimits {
                    requests_per_minute: Some(3_000),
                    tokens_per_minute: Some(2_000_000),
                    ..PlanLimits::default()
                },
                false,
            ),
        );
        Self {
            plans,
            default_plan: "free".to_owned(),
            reserved_operations: BTreeMap::new(),
            fail_open: true,
            stale_after_secs: 30,
            accounts: AccountCaps::default(),
        }
    }
}

impl QuotaConfig {
    /// Checks that the default plan and the plans named by reserved operations exist.
    pub fn validate(&self) -> Result<(), String> {
        if !self.plans.contains_key(&self.default_plan) {
            return Err(format!(
                "quota.default_plan {:?} is not among quota.plans",
                self.default_plan
            ));
        }
        for (operation, plans) in &self.reserved_operations {
            if let Some(missing) = plans.iter().find(|p| !self.plans.contains_key(*p)) {
                return Err(format!(
                    "quota.reserved_operations.{operation} names unknown plan {missing:?}"
                ));
            }
        }
        Ok(())
    }

    /// The plan name and plan an account is on (an unknown plan name falls back to the default).
    pub fn plan_of<'a>(&'a self, settings: Option<&'a AccountSettings>) -> (&'a str, &'a Plan) {
        let wanted = settings
            .and_then(|s| s.plan.as_deref())
            .unwrap_or(&self.default_plan);
        match self.plans.get_key_value(wanted) {
            Some((name, plan)) => (name, plan),
            None => {
                let plan = &self.plans[&self.default_plan];
                (&self.default_plan, plan)
            }
        }
    }

    /// The plan's limits with the account's overrides applied.
    pub fn effective_limits(&self, settings: Option<&AccountSettings>) -> (String, Plan) {
        let (name, plan) = self.plan_of(settings);
        let mut plan = plan.clone();
        if let Some(settings) = settings {
            plan.limits = plan.limits.overridden_by(&settings.overrides);
        }
        (name.to_owned(), plan)
    }

    /// Whether `plan` may use `operation`.
    pub fn allows_operation(&self, plan: &str, operation: &str) -> bool {
        self.reserved_operations
            .get(operation)
            .is_none_or(|plans| plans.iter().any(|p| p == plan))
    }
}
