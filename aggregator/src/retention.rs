//! Raw-event retention: whole month partitions of `events` are dropped once every day in them
//! is older than the retention. Works on ClickHouse 18.16 (no TTL needed); rollups are kept.

use chrono::{Duration, NaiveDate, Utc};
use clickhouse::Row;
use serde::Deserialize;

#[derive(Debug, Row, Deserialize)]
struct PartitionId {
    partition: String,
}

/// The month partitions (`YYYYMM`) of `events` in `database`, oldest first.
pub async fn event_partitions(
    client: &clickhouse::Client,
    database: &str,
) -> Result<Vec<u32>, clickhouse::error::Error> {
    let rows: Vec<PartitionId> = client
        .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = 'events' AND active")
        .bind(database)
        .fetch_all()
        .await?;
    let mut months: Vec<u32> = rows
        .iter()
        .filter_map(|r| r.partition.trim_matches('\'').parse().ok())
        .collect();
    months.sort_unstable();
    Ok(months)
}

/// Whether every day of month `yyyymm` is before `today - retention_days`.
pub fn is_expired(yyyymm: u32, today: NaiveDate, retention_days: u32) -> bool {
    let (year, month) = ((yyyymm / 100) as i32, yyyymm % 100);
    let next_month = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    let cutoff = today - Duration::days(i64::from(retention_days));
    next_month.is_some_and(|first_after| first_after <= cutoff)
}

/// Drops the expired month partitions of `events`; returns the months dropped.
pub async fn drop_expired(
    client: &clickhouse::Client,
    database: &str,
    retention_days: u32,
) -> Result<Vec<u32>, clickhouse::error::Error> {
    let today = Utc::now().date_naive();
    let mut dropped = Vec::new();
    for month in event_partitions(client, database).await? {
        if is_expired(month, today, retention_days) {
            client
                .query("ALTER TABLE events DROP PARTITION ?")
                .bind(month)
                .execute()
                .await?;
            tracing::info!(month, "dropped expired raw events");
            dropped.push(month);
        }
    }
    Ok(dropped)
}

/// Runs [`drop_expired`] every `interval` until `stop` is set.
pub async fn run(
    client: clickhouse::Client,
    database: String,
    retention_days: u32,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        if let Err(err) = drop_expired(&client, &database, retention_days).await {
            tracing::warn!(%err, "raw-event retention failed; retrying at the next interval");
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    #[test]
    fn a_month_expires_when_its_last_day_is_past_the_retention() {
        // 90 days before 2026-11-22 is 2026-08-24: July is wholly older, August is not.
        assert!(is_expired(202607, day(2026, 11, 22), 90));
        assert!(!is_expired(202608, day(2026, 11, 22), 90));
        assert!(is_expired(202512, day(2026, 4, 1), 90));
        assert!(!is_expired(202611, day(2026, 11, 22), 0));
    }
}
