//! What the aggregator and the admin API publish to the compacted topic `tally.quota.v1`, and
//! the window arithmetic both sides share.

use super::Limits;
use chrono::{DateTime, Datelike, Months, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Serialize};

/// Slots of the sliding minute, one per second.
pub const MINUTE_SLOTS: i64 = 60;

/// Starts and ends (unix seconds) of the calendar windows that contain a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowStarts {
    pub hour: i64,
    pub day: i64,
    pub month: i64,
    pub next_hour: i64,
    pub next_day: i64,
    pub next_month: i64,
}

impl WindowStarts {
    pub fn at(ms: i64) -> Self {
        let at = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
        let day = at.date_naive();
        let first = NaiveDate::from_ymd_opt(day.year(), day.month(), 1).unwrap_or(day);
        let next_first = first.checked_add_months(Months::new(1)).unwrap_or(first);
        let midnight = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .unwrap_or_default()
                .and_utc()
                .timestamp()
        };
        let day_start = midnight(day);
        let hour = day_start + i64::from(at.hour()) * 3600;
        Self {
            hour,
            day: day_start,
            month: midnight(first),
            next_hour: hour + 3600,
            next_day: day_start + 86_400,
            next_month: midnight(next_first),
        }
    }
}

/// Requests and tokens of one second, by event time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecondSlot {
    pub sec: i64,
    pub requests: u64,
    pub tokens: u64,
}

/// One Kafka partition's share of an account's usage in its current windows. The partition's
/// owner folds events into it (skipping what it already applied, like every rollup) and
/// publishes it whole after each batch; an account's usage is the sum over partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRecord {
    pub project_id: String,
    pub account_id: String,
    pub partition: i32,
    /// The last offset of `partition` folded into these counters.
    pub offset: u64,
    pub day_start: i64,
    pub day_tokens: i64,
    pub month_start: i64,
    pub month_tokens: i64,
    pub month_cost_nanos: i64,
    pub hour_start: i64,
    pub hour_tokens: i64,
    /// The seconds of the last minute that had requests or tokens, oldest first.
    pub seconds: Vec<SecondSlot>,
}

impl CounterRecord {
    pub fn new(project_id: &str, account_id: &str, partition: i32) -> Self {
        Self {
            project_id: project_id.to_owned(),
            account_id: account_id.to_owned(),
            partition,
            offset: 0,
            day_start: 0,
            day_tokens: 0,
            month_start: 0,
            month_tokens: 0,
            month_cost_nanos: 0,
            hour_start: 0,
            hour_tokens: 0,
            seconds: Vec::new(),
        }
    }

    /// Adds one event's usage at `ts_ms`. A window the event is past starts over; an event of
    /// an earlier window counts only there (it is in the rollups, not in the current window).
    /// Minute slots take events within the last minute of `now_ms` (and not ahead of it by
    /// more than a few seconds of clock skew).
    pub fn add(&mut self, ts_ms: i64, tokens: i64, cost_nanos: i64, requests: u64, now_ms: i64) {
        let w = WindowStarts::at(ts_ms);
        roll(
            &mut self.day_start,
            w.day,
            &mut [&mut self.day_tokens],
            tokens,
        );
        roll(
            &mut self.hour_start,
            w.hour,
            &mut [&mut self.hour_tokens],
            tokens,
        );
        if w.month > self.month_start {
            self.month_start = w.month;
            self.month_tokens = 0;
            self.month_cost_nanos = 0;
        }
        if w.month == self.month_start {
            self.month_tokens = self.month_tokens.saturating_add(tokens);
            self.month_cost_nanos = self.month_cost_nanos.saturating_add(cost_nanos);
        }
        let sec = ts_ms.div_euclid(1000);
        let now = now_ms.div_euclid(1000);
        if sec > now - MINUTE_SLOTS && sec <= now + 5 {
            self.add_slot(sec, requests, u64::try_from(tokens).unwrap_or(0));
        }
        self.trim(now);
    }

    fn add_slot(&mut self, sec: i64, requests: u64, tokens: u64) {
        match self.seconds.binary_search_by_key(&sec, |s| s.sec) {
            Ok(i) => {
                self.seconds[i].requests = self.seconds[i].requests.saturating_add(requests);
                self.seconds[i].tokens = self.seconds[i].tokens.saturating_add(tokens);
            }
            Err(i) => self.seconds.insert(
                i,
                SecondSlot {
                    sec,
                    requests,
                    tokens,
                },
            ),
        }
    }

    /// Drops minute slots that fell out of the last minute.
    pub fn trim(&mut self, now_sec: i64) {
        self.seconds.retain(|s| s.sec > now_sec - MINUTE_SLOTS);
    }

    /// The compacted topic's key: one record per project, account and partition.
    pub fn key(&self) -> String {
        serde_json::json!(["counters", self.project_id, self.account_id, self.partition])
            .to_string()
    }
}

fn roll(start: &mut i64, window: i64, counters: &mut [&mut i64], amount: i64) {
    if window > *start {
        *start = window;
        for c in counters.iter_mut() {
            **c = 0;
        }
    }
    if window == *start {
        for c in counters.iter_mut() {
            **c = c.saturating_add(amount);
        }
    }
}

/// An account's plan and overrides, set through the admin API.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountSettings {
    /// The plan's name; absent means the configured default plan.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// Limits that replace the plan's.
    pub overrides: Limits,
}

/// A record of `tally.quota.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum QuotaRecord {
    Counters(CounterRecord),
    Settings {
        project_id: String,
        account_id: String,
        settings: AccountSettings,
        /// When it was set (unix ms).
        updated_at_ms: i64,
    },
}

impl QuotaRecord {
    pub fn key(&self) -> String {
        match self {
            Self::Counters(c) => c.key(),
            Self::Settings {
                project_id,
                account_id,
                ..
            } => serde_json::json!(["settings", project_id, account_id]).to_string(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}
