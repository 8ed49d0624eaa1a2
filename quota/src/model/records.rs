//! What the aggregator and the admin API publish to the compacted topic `tally.quota.v1`, and
//! the window arithmetic both sides share.

use super::PlanLimits;
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

/// Usage of one calendar window (hour, day or month), by its start in Unix seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowTotal {
    pub start: i64,
    pub tokens: i64,
    /// Kept for months only (the cost limit is monthly).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cost_nanos: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// How far past now a window may start and still be counted. Ingest accepts events up to
/// 24 hours ahead (`max_future_hours`); 48 hours leave room for a larger setting while
/// bounding each counter to 50 hours, 3 days and 2 months.
pub const LOOKAHEAD_SECS: i64 = 48 * 3600;

/// Which calendar window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    Hour,
    Day,
    Month,
}

impl Window {
    pub fn start(self, w: &WindowStarts) -> i64 {
        match self {
            Self::Hour => w.hour,
            Self::Day => w.day,
            Self::Month => w.month,
        }
    }
}

/// One Kafka partition's share of an account's usage in the windows that have not ended.
/// The partition's owner folds events into it (skipping what it already applied, like every
/// rollup) and publishes it whole after each batch; an account's usage is the sum over
/// partitions.
///
/// Windows move with the clock, never with the data: an event counts in the window of its
/// own time when that window contains now or lies ahead (a client clock running fast), and
/// in no counter when its window has passed (it is in the rollups). A window ahead of now
/// is summed only once the clock reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRecord {
    pub project_id: String,
    pub account_id: String,
    pub partition: i32,
    /// The last offset of `partition` folded into these counters.
    pub offset: u64,
    /// Hours, days and months that contain now or lie ahead, oldest first.
    #[serde(default)]
    pub hours: Vec<WindowTotal>,
    #[serde(default)]
    pub days: Vec<WindowTotal>,
    #[serde(default)]
    pub months: Vec<WindowTotal>,
    /// The seconds of the last minute that had requests or tokens, oldest first.
    #[serde(default)]
    pub seconds: Vec<SecondSlot>,
}

impl CounterRecord {
    pub fn new(project_id: &str, account_id: &str, partition: i32) -> Self {
        Self {
            project_id: project_id.to_owned(),
            account_id: account_id.to_owned(),
            partition,
            offset: 0,
            hours: Vec::new(),
            days: Vec::new(),
            months: Vec::new(),
            seconds: Vec::new(),
        }
    }

    fn windows(&self, window: Window) -> &[WindowTotal] {
        match window {
            Window::Hour => &self.hours,
            Window::Day => &self.days,
            Window::Month => &self.months,
        }
    }

    /// The usage counted in the window that starts at `start` (zero when none was).
    pub fn total(&self, window: Window, start: i64) -> WindowTotal {
        self.windows(window)
            .iter()
            .find(|t| t.start == start)
            .copied()
            .unwrap_or(WindowTotal {
                start,
                ..WindowTotal::default()
            })
    }

    /// Adds usage to the window that starts at `start`, unless that window has passed at
    /// `now_ms` or starts beyond the lookahead.
    pub fn add_to_window(
        &mut self,
        window: Window,
        start: i64,
        tokens: i64,
        cost_nanos: i64,
        now_ms: i64,
    ) {
        let current = window.start(&WindowStarts::at(now_ms));
        if start < current || start > now_ms.div_euclid(1000) + LOOKAHEAD_SECS {
            return;
        }
        let windows = match window {
            Window::Hour => &mut self.hours,
            Window::Day => &mut self.days,
            Window::Month => &mut self.months,
        };
        let i = match windows.binary_search_by_key(&start, |t| t.start) {
            Ok(i) => i,
            Err(i) => {
                windows.insert(
                    i,
                    WindowTotal {
                        start,
                        ..WindowTotal::default()
                    },
                );
                i
            }
        };
        windows[i].tokens = windows[i].tokens.saturating_add(tokens);
        windows[i].cost_nanos = windows[i].cost_nanos.saturating_add(cost_nanos);
    }

    /// Adds one event's usage at `ts_ms`, seen at `now_ms`; windows that passed are dropped
    /// first. Minute slots take events within the last minute of `now_ms` (and not ahead of
    /// it by more than a few seconds of clock skew).
    pub fn add(&mut self, ts_ms: i64, tokens: i64, cost_nanos: i64, requests: u64, now_ms: i64) {
        self.expire(now_ms);
        let at = WindowStarts::at(ts_ms);
        self.add_to_window(Window::Hour, at.hour, tokens, 0, now_ms);
        self.add_to_window(Window::Day, at.day, tokens, 0, now_ms);
        self.add_to_window(Window::Month, at.month, tokens, cost_nanos, now_ms);
        let sec = ts_ms.div_euclid(1000);
        let now = now_ms.div_euclid(1000);
        if sec > now - MINUTE_SLOTS && sec <= now + 5 {
            self.add_slot(sec, requests, u64::try_from(tokens).unwrap_or(0));
        }
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

    /// Drops windows that ended and minute slots that fell out of the last minute.
    pub fn expire(&mut self, now_ms: i64) {
        let w = WindowStarts::at(now_ms);
        self.hours.retain(|t| t.start >= w.hour);
        self.days.retain(|t| t.start >= w.day);
        self.months.retain(|t| t.start >= w.month);
        let now_sec = now_ms.div_euclid(1000);
        self.seconds.retain(|s| s.sec > now_sec - MINUTE_SLOTS);
    }

    /// The compacted topic's key: one record per project, account and partition.
    pub fn key(&self) -> String {
        serde_json::json!(["counters", self.project_id, self.account_id, self.partition])
            .to_string()
    }

    /// The project, account and partition a counters key names (see [`CounterRecord::key`]).
    pub fn parse_key(key: &[u8]) -> Option<(String, String, i32)> {
        let (kind, project_id, account_id, partition): (String, String, String, i32) =
            serde_json::from_slice(key).ok()?;
        (kind == "counters").then_some((project_id, account_id, partition))
    }

    /// True when every window and the minute have passed at `now_ms`: nothing is left to count.
    pub fn is_spent(&self, now_ms: i64) -> bool {
        let w = WindowStarts::at(now_ms);
        let now_sec = now_ms.div_euclid(1000);
        self.hours.iter().all(|t| t.start < w.hour)
            && self.days.iter().all(|t| t.start < w.day)
            && self.months.iter().all(|t| t.start < w.month)
            && self.seconds.iter().all(|s| s.sec <= now_sec - MINUTE_SLOTS)
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
    pub overrides: PlanLimits,
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
