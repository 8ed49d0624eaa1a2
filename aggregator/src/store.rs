//! The aggregator's reads and writes in ClickHouse.

use crate::fold::FoldOutput;
use clickhouse::Row;
use serde::Deserialize;
use tally_schema::queries;
use tally_schema::rollups::{Granularity, ToolRow, UsageRow};
use tally_schema::rows::{EventRow, SessionRow};

/// An id of the raw event store, to rebuild a partition's dedup window.
#[derive(Debug, Row, Deserialize)]
pub struct KnownEvent {
    pub project_id: String,
    pub event_id: String,
    pub first_offset: u64,
    pub first_received_at_ms: i64,
}

/// One partition's usage of one account in one bucket (see `queries::PARTITION_*_USAGE_SINCE`).
#[derive(Debug, Row, Deserialize)]
pub struct PartitionUsage {
    pub project_id: String,
    pub account_id: String,
    pub bucket_start: u32,
    pub tokens: i64,
    pub cost_nanos: i64,
    pub last_offset: u64,
}

/// One partition's requests and tokens of one account in one second.
#[derive(Debug, Row, Deserialize)]
pub struct RecentSecond {
    pub project_id: String,
    pub account_id: String,
    pub second: i64,
    pub requests: u64,
    pub tokens: u64,
}

#[derive(Clone)]
pub struct Store {
    client: clickhouse::Client,
}

impl Store {
    pub fn new(client: clickhouse::Client) -> Self {
        Self { client }
    }

    /// Writes a fold's rows, raw events first; each table's rows go in one insert.
    pub async fn write(&self, out: &FoldOutput) -> Result<(), clickhouse::error::Error> {
        insert_all(&self.client, "events", &out.events).await?;
        insert_all(&self.client, "sessions", &out.sessions).await?;
        insert_all(
            &self.client,
            Granularity::Hour.usage_table(),
            &out.usage_hourly,
        )
        .await?;
        insert_all(
            &self.client,
            Granularity::Day.usage_table(),
            &out.usage_daily,
        )
        .await?;
        insert_all(&self.client, "tool_usage_hourly", &out.tools).await
    }

    /// Every usage row one partition holds in one bucket.
    pub async fn load_usage_group(
        &self,
        granularity: Granularity,
        project_id: &str,
        bucket: u32,
        partition: i32,
    ) -> Result<Vec<UsageRow>, clickhouse::error::Error> {
        let query = match granularity {
            Granularity::Hour => queries::USAGE_HOURLY_GROUP,
            Granularity::Day => queries::USAGE_DAILY_GROUP,
        };
        self.client
            .query(query.sql)
            .bind(project_id)
            .bind(bucket)
            .bind(partition)
            .fetch_all()
            .await
    }

    /// The raw events a rebuild of `partition` folds again (see `queries::REBUILD_EVENTS`).
    pub async fn rebuild_events(
        &self,
        partition: i32,
        control_offset: u64,
        (from_secs, to_secs): (i64, i64),
    ) -> Result<Vec<EventRow>, clickhouse::error::Error> {
        self.client
            .query(queries::REBUILD_EVENTS.sql)
            .bind(partition)
            .bind(control_offset)
            .bind(partition)
            .bind(control_offset)
            .bind(from_secs)
            .bind(to_secs)
            .fetch_all()
            .await
    }

    /// Every tool row one partition holds in one hour.
    pub async fn load_tool_group(
        &self,
        project_id: &str,
        bucket: u32,
        partition: i32,
    ) -> Result<Vec<ToolRow>, clickhouse::error::Error> {
        self.client
            .query(queries::TOOL_USAGE_GROUP.sql)
            .bind(project_id)
            .bind(bucket)
            .bind(partition)
            .fetch_all()
            .await
    }

    pub async fn load_sessions(
        &self,
        project_id: &str,
        session_ids: &[String],
    ) -> Result<Vec<SessionRow>, clickhouse::error::Error> {
        let mut rows = Vec::new();
        // Bounded IN lists keep each query small.
        for chunk in session_ids.chunks(1000) {
            let mut part = self
                .client
                .query(queries::SESSIONS_BY_ID.sql)
                .bind(project_id)
                .bind(chunk)
                .fetch_all::<SessionRow>()
                .await?;
            rows.append(&mut part);
        }
        Ok(rows)
    }

    /// A partition's usage per account and bucket since `since` (Unix seconds).
    pub async fn partition_usage_since(
        &self,
        granularity: Granularity,
        partition: i32,
        since: i64,
    ) -> Result<Vec<PartitionUsage>, clickhouse::error::Error> {
        let query = match granularity {
            Granularity::Hour => queries::PARTITION_HOURLY_USAGE_SINCE,
            Granularity::Day => queries::PARTITION_DAILY_USAGE_SINCE,
        };
        self.client
            .query(query.sql)
            .bind(partition)
            .bind(u32::try_from(since).unwrap_or(0))
            .fetch_all()
            .await
    }

    /// A partition's requests and tokens per account and second since `since` (Unix seconds).
    pub async fn partition_recent_seconds(
        &self,
        partition: i32,
        since: i64,
    ) -> Result<Vec<RecentSecond>, clickhouse::error::Error> {
        self.client
            .query(queries::PARTITION_RECENT_SECONDS.sql)
            .bind(partition)
            .bind(u32::try_from(since).unwrap_or(0))
            .fetch_all()
            .await
    }

    /// Inserts rows into `table` in one insert.
    pub async fn insert<T>(&self, table: &str, rows: &[T]) -> Result<(), clickhouse::error::Error>
    where
        T: clickhouse::RowOwned + clickhouse::RowWrite,
    {
        insert_all(&self.client, table, rows).await
    }

    /// Event ids a partition received since `since_ms` (ingest time).
    pub async fn known_events(
        &self,
        partition: i32,
        since_ms: i64,
    ) -> Result<Vec<KnownEvent>, clickhouse::error::Error> {
        self.client
            .query(queries::KNOWN_EVENTS.sql)
            .bind(partition)
            .bind(since_ms)
            .fetch_all::<KnownEvent>()
            .await
    }
}

async fn insert_all<T>(
    client: &clickhouse::Client,
    table: &str,
    rows: &[T],
) -> Result<(), clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowWrite,
{
    if rows.is_empty() {
        return Ok(());
    }
    let mut insert = client.insert::<T>(table).await?;
    for row in rows {
        insert.write(row).await?;
    }
    insert.end().await
}
