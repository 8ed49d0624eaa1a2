//! The aggregator's reads and writes in ClickHouse.

use crate::fold::FoldOutput;
use crate::known::{HashSet64, KeyHasher};
use clickhouse::Row;
use serde::Deserialize;
use std::collections::HashMap;
use tally_quota::ledger::{PartitionUsage, RecentSecond};
use tally_runtime::clickhouse::{exception_code, lookup_chunks};
use tally_schema::queries::params::{self, prepare};
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

/// A session that has a row ([`params::PartitionSessions`]).
#[derive(Debug, Row, Deserialize)]
struct SessionKeyRow {
    kafka_partition: i32,
    project_id: String,
    session_id: String,
}

/// The key of a usage row in a bucket ([`params::UsageKeys`]).
#[derive(Debug, Row, Deserialize)]
struct UsageKeyRow {
    bucket_start: u32,
    kafka_partition: i32,
    account_id: String,
    model: String,
    operation: String,
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

    /// The usage rows of one project in `buckets` × `partitions` × `accounts` (bounded
    /// lookups by account), a superset of what a batch touches.
    pub async fn load_usage_rows(
        &self,
        granularity: Granularity,
        project_id: &str,
        (buckets, partitions): (&[u32], &[i32]),
        accounts: &[String],
    ) -> Result<Vec<UsageRow>, clickhouse::error::Error> {
        chunked(accounts, |chunk| {
            let group = params::UsageGroup {
                granularity,
                project_id,
                buckets,
                partitions,
                accounts: chunk,
            };
            prepare(&self.client, group)
        })
        .await
    }

    /// The tool rows of one project in `buckets` × `partitions` × `tools`, as
    /// [`Store::load_usage_rows`].
    pub async fn load_tool_rows(
        &self,
        project_id: &str,
        (buckets, partitions): (&[u32], &[i32]),
        tools: &[String],
    ) -> Result<Vec<ToolRow>, clickhouse::error::Error> {
        chunked(tools, |chunk| {
            let group = params::ToolUsageGroup {
                project_id,
                buckets,
                partitions,
                tools: chunk,
            };
            prepare(&self.client, group)
        })
        .await
    }

    /// The raw events a rebuild of `partition` folds again (see `queries::REBUILD_EVENTS`).
    pub async fn rebuild_events(
        &self,
        partition: i32,
        control_offset: u64,
        (from_secs, to_secs): (i64, i64),
    ) -> Result<Vec<EventRow>, clickhouse::error::Error> {
        let events = params::RebuildEvents {
            partition,
            control_offset,
            from_secs,
            to_secs,
        };
        prepare(&self.client, events).fetch_all().await
    }

    /// The current rows of `session_ids`, in lookups bounded in ids and bytes
    /// ([`lookup_chunks`]), so no batch's ids make a query ClickHouse refuses.
    pub async fn load_sessions(
        &self,
        project_id: &str,
        session_ids: &[String],
    ) -> Result<Vec<SessionRow>, clickhouse::error::Error> {
        chunked(session_ids, |chunk| {
            let sessions = params::SessionsById {
                project_id,
                session_ids: chunk,
            };
            prepare(&self.client, sessions)
        })
        .await
    }

    /// The sessions of `partitions` that have a row, hashed as they stream in (a partition
    /// may hold millions).
    pub async fn partition_sessions(
        &self,
        partitions: &[i32],
        hasher: &KeyHasher,
    ) -> Result<HashMap<i32, HashSet64>, clickhouse::error::Error> {
        let mut known: HashMap<i32, HashSet64> = partitions
            .iter()
            .map(|p| (*p, HashSet64::default()))
            .collect();
        let params = params::PartitionSessions { partitions };
        let mut cursor = prepare(&self.client, params).fetch::<SessionKeyRow>()?;
        while let Some(row) = cursor.next().await? {
            known
                .entry(row.kafka_partition)
                .or_default()
                .insert(hasher.session(&row.project_id, &row.session_id));
        }
        Ok(known)
    }

    /// The keys of a project's usage rows in `buckets` × `partitions`, by (bucket,
    /// partition), hashed as they stream in.
    pub async fn usage_keys(
        &self,
        granularity: Granularity,
        project_id: &str,
        (buckets, partitions): (&[u32], &[i32]),
        hasher: &KeyHasher,
    ) -> Result<HashMap<(u32, i32), HashSet64>, clickhouse::error::Error> {
        let mut known: HashMap<(u32, i32), HashSet64> = HashMap::new();
        let params = params::UsageKeys {
            granularity,
            project_id,
            buckets,
            partitions,
        };
        let mut cursor = prepare(&self.client, params).fetch::<UsageKeyRow>()?;
        while let Some(row) = cursor.next().await? {
            known
                .entry((row.bucket_start, row.kafka_partition))
                .or_default()
                .insert(hasher.usage(&row.account_id, &row.model, &row.operation));
        }
        Ok(known)
    }

    /// A partition's usage per account and bucket since `since` (Unix seconds).
    pub async fn partition_usage_since(
        &self,
        granularity: Granularity,
        partition: i32,
        since: i64,
    ) -> Result<Vec<PartitionUsage>, clickhouse::error::Error> {
        let usage = params::PartitionUsageSince {
            granularity,
            partition,
            since: u32::try_from(since).unwrap_or(0),
        };
        prepare(&self.client, usage).fetch_all().await
    }

    /// A partition's requests and tokens per account and second since `since` (Unix seconds).
    pub async fn partition_recent_seconds(
        &self,
        partition: i32,
        since: i64,
    ) -> Result<Vec<RecentSecond>, clickhouse::error::Error> {
        let seconds = params::PartitionRecentSeconds {
            partition,
            since: u32::try_from(since).unwrap_or(0),
        };
        prepare(&self.client, seconds).fetch_all().await
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
        prepare(
            &self.client,
            params::KnownEvents {
                partition,
                since_ms,
            },
        )
        .fetch_all::<KnownEvent>()
        .await
    }
}

/// ClickHouse error codes that say the statement or its data is wrong: sending it again
/// cannot succeed. Anything else (connection, timeouts, memory, too many parts, unknown
/// table during a migration) is worth retrying.
const PERMANENT_CODES: &[u32] = &[
    6,   // CANNOT_PARSE_TEXT
    26,  // CANNOT_PARSE_QUOTED_STRING
    27,  // CANNOT_PARSE_INPUT_ASSERTION_FAILED
    33,  // CANNOT_READ_ALL_DATA
    38,  // CANNOT_PARSE_DATE
    41,  // CANNOT_PARSE_DATETIME
    43,  // ILLEGAL_TYPE_OF_ARGUMENT
    53,  // TYPE_MISMATCH
    62,  // SYNTAX_ERROR (also "Max query size exceeded")
    69,  // ARGUMENT_OUT_OF_BOUND
    70,  // CANNOT_CONVERT_TYPE
    72,  // CANNOT_PARSE_NUMBER
    117, // INCORRECT_DATA
    128, // TOO_LARGE_ARRAY_SIZE
    131, // TOO_LARGE_STRING_SIZE
    167, // TOO_DEEP_AST
    168, // TOO_BIG_AST
    321, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
];

/// True when retrying the call that failed with `err` cannot help: ClickHouse refused the
/// statement or its data (see [`PERMANENT_CODES`]), or a row could not be encoded.
pub fn is_permanent(err: &clickhouse::error::Error) -> bool {
    use clickhouse::error::Error;
    match err {
        Error::BadResponse(_) => exception_code(err).is_some_and(|c| PERMANENT_CODES.contains(&c)),
        Error::Custom(_) | Error::SequenceMustHaveLength | Error::DataFormat(_) => true,
        _ => false,
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

/// Runs the query `lookup` builds for each chunk of `ids` ([`lookup_chunks`]) and gathers
/// the rows.
async fn chunked<T>(
    ids: &[String],
    lookup: impl Fn(&[String]) -> clickhouse::query::Query,
) -> Result<Vec<T>, clickhouse::error::Error>
where
    T: clickhouse::RowOwned + clickhouse::RowRead,
{
    let mut rows = Vec::new();
    for chunk in lookup_chunks(ids) {
        rows.append(&mut lookup(chunk).fetch_all::<T>().await?);
    }
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clickhouse::error::Error;

    #[test]
    fn refusals_are_permanent_and_outages_are_not() {
        let old =
            "Code: 62, e.displayText() = DB::Exception: Syntax error: Max query size exceeded";
        let new = "Code: 53. DB::Exception: Type mismatch. (TYPE_MISMATCH)";
        assert!(is_permanent(&Error::BadResponse(old.into())));
        assert!(is_permanent(&Error::BadResponse(new.into())));
        for transient in [
            "Code: 241, e.displayText() = DB::Exception: Memory limit exceeded",
            "Code: 60. DB::Exception: Table tally.events doesn't exist",
            "502 Bad Gateway",
        ] {
            assert!(
                !is_permanent(&Error::BadResponse(transient.into())),
                "{transient}"
            );
        }
        assert!(!is_permanent(&Error::TimedOut));
        assert!(is_permanent(&Error::Custom("row".into())));
    }
}

#[cfg(test)]
mod columns {
    use super::*;
    use tally_schema::queries::{self as q, assert_columns};

    #[test]
    fn rows_read_the_columns_their_queries_return() {
        assert_columns::<KnownEvent>(&q::KNOWN_EVENTS);
        assert_columns::<SessionKeyRow>(&q::PARTITION_SESSIONS);
        assert_columns::<UsageKeyRow>(&q::USAGE_HOURLY_KEYS);
        assert_columns::<UsageKeyRow>(&q::USAGE_DAILY_KEYS);
        assert_columns::<PartitionUsage>(&q::PARTITION_HOURLY_USAGE_SINCE);
        assert_columns::<PartitionUsage>(&q::PARTITION_DAILY_USAGE_SINCE);
        assert_columns::<RecentSecond>(&q::PARTITION_RECENT_SECONDS);
    }
}
