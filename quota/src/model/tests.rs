#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test
use super::*;
use chrono::{TimeZone, Utc};

fn ms(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .unwrap()
        .timestamp_millis()
}

fn plan(limits: PlanLimits) -> Plan {
    Plan {
        limits,
        ..Plan::default()
    }
}

fn check(tokens: u64) -> CheckRequest {
    CheckRequest {
        estimated_tokens: tokens,
        ..CheckRequest::default()
    }
}

#[test]
fn windows_are_calendar_utc() {
    let w = WindowStarts::at(ms(2026, 12, 31, 23, 59, 59) + 999);
    assert_eq!(w.day, ms(2026, 12, 31, 0, 0, 0) / 1000);
    assert_eq!(w.next_day, ms(2027, 1, 1, 0, 0, 0) / 1000);
    assert_eq!(w.month, ms(2026, 12, 1, 0, 0, 0) / 1000);
    assert_eq!(w.next_month, ms(2027, 1, 1, 0, 0, 0) / 1000);
    assert_eq!(w.hour, ms(2026, 12, 31, 23, 0, 0) / 1000);
    assert_eq!(w.next_hour, ms(2027, 1, 1, 0, 0, 0) / 1000);
}

#[test]
fn counters_roll_over_and_keep_late_events_out_of_the_current_window() {
    let now = ms(2026, 11, 22, 10, 0, 30);
    let mut c = CounterRecord::new("p", "a", 0);
    c.add(ms(2026, 11, 21, 23, 0, 0), 100, 7, 1, now);
    c.add(now - 5_000, 10, 3, 1, now);
    // Late: yesterday's event after today's started counts in no current window.
    c.add(ms(2026, 11, 21, 22, 0, 0), 1000, 1000, 1, now);
    let usage = AccountUsage::sum([&c], now);
    assert_eq!(usage.day_tokens, 10);
    assert_eq!(usage.hour_tokens, 10);
    assert_eq!(usage.month_tokens, 1110);
    assert_eq!(usage.month_cost_nanos, 1010);
    assert_eq!(usage.minute_requests, 1);
    assert_eq!(usage.minute_tokens, 10);
    // A minute later the sliding window is empty; the day is not.
    let later = AccountUsage::sum([&c], now + 60_000);
    assert_eq!((later.minute_requests, later.day_tokens), (0, 10));
    // The next day's check sees nothing of today's day window.
    assert_eq!(
        AccountUsage::sum([&c], ms(2026, 11, 23, 0, 0, 1)).day_tokens,
        0
    );
}

#[test]
fn partitions_sum() {
    let now = ms(2026, 11, 22, 10, 0, 0);
    let mut a = CounterRecord::new("p", "a", 0);
    let mut b = CounterRecord::new("p", "a", 1);
    a.add(now, 5, 0, 1, now);
    b.add(now - 1000, 7, 0, 2, now);
    let usage = AccountUsage::sum([&a, &b], now);
    assert_eq!((usage.day_tokens, usage.minute_requests), (12, 3));
    assert_eq!(usage.minute_oldest_sec, Some(now / 1000 - 1));
}

#[test]
fn estimate_counts_and_the_first_limit_passed_is_the_reason() {
    let config = QuotaConfig::default();
    let p = plan(PlanLimits {
        tokens_per_day: Some(1000),
        tokens_per_month: Some(10_000),
        ..PlanLimits::default()
    });
    let now = ms(2026, 11, 22, 10, 0, 0);
    let usage = AccountUsage {
        day_tokens: 900,
        month_tokens: 900,
        ..AccountUsage::default()
    };
    let ok = evaluate(&config, "x", &p, &usage, &check(100), now);
    assert!(ok.allowed);
    assert_eq!(
        ok.status,
        LimitStatus::Exceeded,
        "900 + 100 is 100 % of the day"
    );
    let refused = evaluate(&config, "x", &p, &usage, &check(101), now);
    assert!(!refused.allowed);
    assert_eq!(refused.reason, Some(Reason::TokensPerDayExceeded));
    assert!(refused.requires_upgrade);
    let day = &refused.limits[refused.tightest.unwrap()];
    assert_eq!(
        (day.name, day.used, day.remaining),
        ("tokens_per_day", 900, 100)
    );
    assert_eq!(day.resets_at_ms, Some(ms(2026, 11, 23, 0, 0, 0)));
}

#[test]
fn thresholds_set_the_status() {
    let t = Thresholds::default();
    assert_eq!(LimitStatus::of(749, 1000, &t), LimitStatus::Ok);
    assert_eq!(LimitStatus::of(750, 1000, &t), LimitStatus::Warning);
    assert_eq!(LimitStatus::of(900, 1000, &t), LimitStatus::Critical);
    assert_eq!(LimitStatus::of(1000, 1000, &t), LimitStatus::Exceeded);
    assert_eq!(LimitStatus::of(1, 0, &t), LimitStatus::Exceeded);
    assert_eq!(LimitStatus::of(0, 0, &t), LimitStatus::Ok);
}

#[test]
fn minute_limits_do_not_ask_for_an_upgrade() {
    let config = QuotaConfig::default();
    let p = plan(PlanLimits {
        requests_per_minute: Some(2),
        ..PlanLimits::default()
    });
    let now = ms(2026, 11, 22, 10, 0, 0);
    let usage = AccountUsage {
        minute_requests: 2,
        minute_oldest_sec: Some(now / 1000 - 10),
        ..AccountUsage::default()
    };
    let d = evaluate(&config, "x", &p, &usage, &check(0), now);
    assert_eq!(d.reason, Some(Reason::RequestsPerMinuteExceeded));
    assert!(!d.requires_upgrade);
    assert_eq!(d.limits[0].resets_at_ms, Some(now + 50_000));
}

#[test]
fn models_operations_and_request_caps() {
    let mut config = QuotaConfig::default();
    config
        .reserved_operations
        .insert("deep_research".into(), vec!["pro".into()]);
    let p = plan(PlanLimits {
        allowed_models: Some(vec!["gpt-4o-mini".into(), "claude-3-5-haiku*".into()]),
        tokens_per_request: Some(500),
        ..PlanLimits::default()
    });
    let now = ms(2026, 11, 22, 10, 0, 0);
    let ask = |model: &str, operation: &str, tokens| CheckRequest {
        model: Some(model.into()),
        operation: Some(operation.into()),
        estimated_tokens: tokens,
        estimated_cost_nanos: 0,
    };
    let usage = AccountUsage::default();
    let d = |r| evaluate(&config, "free", &p, &usage, &r, now).reason;
    assert_eq!(d(ask("gpt-4o-mini", "chat", 10)), None);
    assert_eq!(d(ask("claude-3-5-haiku-20241022", "chat", 10)), None);
    assert_eq!(d(ask("gpt-4o", "chat", 10)), Some(Reason::ModelNotAllowed));
    assert_eq!(
        d(ask("gpt-4o-mini", "deep_research", 10)),
        Some(Reason::OperationNotInPlan)
    );
    assert_eq!(
        d(ask("gpt-4o-mini", "chat", 501)),
        Some(Reason::TokensPerRequestExceeded)
    );
    assert!(
        evaluate(
            &config,
            "pro",
            &p,
            &usage,
            &ask("gpt-4o-mini", "deep_research", 1),
            now
        )
        .allowed
    );
}

#[test]
fn overrides_win_over_the_plan() {
    let config = QuotaConfig::default();
    let settings = AccountSettings {
        plan: Some("pro".into()),
        overrides: PlanLimits {
            tokens_per_day: Some(7),
            ..PlanLimits::default()
        },
    };
    let (name, plan) = config.effective_limits(Some(&settings));
    assert_eq!(name, "pro");
    assert_eq!(plan.limits.tokens_per_day, Some(7));
    assert_eq!(
        plan.limits.tokens_per_month,
        config.plans["pro"].limits.tokens_per_month
    );
    let unknown = AccountSettings {
        plan: Some("gold".into()),
        ..AccountSettings::default()
    };
    assert_eq!(config.effective_limits(Some(&unknown)).0, "free");
}

#[test]
fn config_reads_usd_exactly_and_checks_plan_names() {
    let limits: PlanLimits = serde_json::from_str(r#"{"cost_per_month_usd": 12.34}"#).unwrap();
    assert_eq!(limits.cost_per_month_usd, Some(Usd(12_340_000_000)));
    let limits: PlanLimits =
        serde_json::from_str(r#"{"cost_per_month_usd": "0.000000001"}"#).unwrap();
    assert_eq!(limits.cost_per_month_usd, Some(Usd(1)));
    assert!(serde_json::from_str::<PlanLimits>(r#"{"cost_per_month_usd": -1}"#).is_err());
    let mut config = QuotaConfig::default();
    assert!(config.validate().is_ok());
    config
        .reserved_operations
        .insert("x".into(), vec!["gold".into()]);
    assert!(config.validate().unwrap_err().contains("gold"));
}

#[test]
fn records_round_trip_with_distinct_keys() {
    let mut c = CounterRecord::new("p", "a/b", 3);
    c.add(
        ms(2026, 11, 22, 10, 0, 0),
        5,
        1,
        1,
        ms(2026, 11, 22, 10, 0, 0),
    );
    let record = QuotaRecord::Counters(c);
    assert_eq!(QuotaRecord::from_json(&record.to_json()).unwrap(), record);
    let settings = QuotaRecord::Settings {
        project_id: "p".into(),
        account_id: "a/b".into(),
        settings: AccountSettings::default(),
        updated_at_ms: 1,
    };
    assert_ne!(record.key(), settings.key());
    assert_eq!(
        QuotaRecord::from_json(&settings.to_json()).unwrap(),
        settings
    );
}

#[test]
fn windows_move_with_the_clock_not_with_event_times() {
    let now = ms(2026, 11, 22, 10, 0, 30);
    let mut c = CounterRecord::new("p", "a", 0);
    c.add(now - 1_000, 1000, 10, 1, now);
    // A client clock 23 hours fast: tomorrow's event waits in tomorrow's windows.
    let ahead = ms(2026, 11, 23, 9, 0, 0);
    c.add(ahead, 5000, 50, 1, now);
    let usage = AccountUsage::sum([&c], now);
    assert_eq!(
        (usage.day_tokens, usage.hour_tokens, usage.month_tokens),
        (1000, 1000, 6000),
        "the month holds both; today and this hour only today's"
    );
    c.add(now + 2_000, 500, 5, 1, now + 2_000);
    assert_eq!(AccountUsage::sum([&c], now + 2_000).day_tokens, 1500);
    // Once the clock reaches tomorrow, the early event is there and today's are gone.
    let tomorrow = AccountUsage::sum([&c], ahead + 1);
    assert_eq!((tomorrow.day_tokens, tomorrow.hour_tokens), (5000, 5000));
    assert_eq!(tomorrow.month_cost_nanos, 65);
    // Windows that passed are dropped when the counter next moves; the lookahead is bounded.
    c.add(
        ms(2026, 11, 30, 0, 0, 0),
        1,
        0,
        0,
        ms(2026, 11, 25, 0, 0, 0),
    );
    assert!(c
        .days
        .iter()
        .all(|d| d.start >= ms(2026, 11, 25, 0, 0, 0) / 1000));
    assert!(
        c.days.is_empty(),
        "5 days ahead is past the lookahead: {:?}",
        c.days
    );
}
