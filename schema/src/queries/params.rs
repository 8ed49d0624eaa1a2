//! The values of each query, named: one struct per query binds them to its `?` placeholders
//! in order, repeats included, so no call site counts positions. ClickHouse 18.16 has no
//! server-side query parameters, so the values travel bound into the text by the client,
//! escaped. The metrics queries' structs, built from the read API's range types, are ingest's.

use super::*;
use crate::rollups::Granularity;
use clickhouse::query::Query as Statement;

/// A query and its values.
pub trait Params {
    /// The query these values belong to.
    fn query(&self) -> Query;
    /// Binds every value, in the order of the query's placeholders.
    fn bind(self, statement: Statement) -> Statement;
}

/// The query of `params` on `client`, its values bound.
pub fn prepare<P: Params>(client: &clickhouse::Client, params: P) -> Statement {
    let sql = params.query().sql;
    params.bind(client.query(sql))
}

/// A page of one session's events ([`SESSION_TIMELINE`]), after the event at
/// (`ts_ms`, `event_id`) when given, `limit` at most.
pub struct SessionTimeline<'a> {
    pub with_content: bool,
    pub project_id: &'a str,
    pub session_id: &'a str,
    pub after: Option<(i64, &'a str)>,
    pub limit: u32,
}

impl Params for SessionTimeline<'_> {
    fn query(&self) -> Query {
        SESSION_TIMELINE
    }
    fn bind(self, statement: Statement) -> Statement {
        let (has_cursor, ts_ms, event_id) = cursor(self.after);
        statement
            .bind(u8::from(self.with_content))
            .bind(self.project_id)
            .bind(self.session_id)
            .bind(has_cursor)
            .bind(ts_ms)
            .bind(ts_ms)
            .bind(event_id)
            .bind(self.limit)
    }
}

/// (has a cursor, its time, its id), as the paging queries test them.
fn cursor(after: Option<(i64, &str)>) -> (u8, i64, &str) {
    match after {
        Some((ts_ms, id)) => (1, ts_ms, id),
        None => (0, 0, ""),
    }
}

/// One session's rollup row ([`SESSION_ROLLUP`]).
pub struct SessionRollup<'a> {
    pub project_id: &'a str,
    pub session_id: &'a str,
}

impl Params for SessionRollup<'_> {
    fn query(&self) -> Query {
        SESSION_ROLLUP
    }
    fn bind(self, statement: Statement) -> Statement {
        statement.bind(self.project_id).bind(self.session_id)
    }
}

/// Several sessions' rollup rows ([`SESSIONS_BY_ID`]); ids as `String`s or `&str`s.
pub struct SessionsById<'a, Id> {
    pub project_id: &'a str,
    pub session_ids: &'a [Id],
}

impl<Id: serde::Serialize> Params for SessionsById<'_, Id> {
    fn query(&self) -> Query {
        SESSIONS_BY_ID
    }
    fn bind(self, statement: Statement) -> Statement {
        statement.bind(self.project_id).bind(self.session_ids)
    }
}

/// A page of a project's sessions ([`SESSIONS_PAGE`]); empty filters match everything.
pub struct SessionsPage<'a> {
    pub project_id: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub account_id: &'a str,
    pub status: &'a str,
    pub model: &'a str,
    /// After the session started at (`first_ts_ms`, `session_id`).
    pub after: Option<(i64, &'a str)>,
    pub limit: u32,
}

impl Params for SessionsPage<'_> {
    fn query(&self) -> Query {
        SESSIONS_PAGE
    }
    fn bind(self, statement: Statement) -> Statement {
        let (has_cursor, ts_ms, session_id) = cursor(self.after);
        statement
            .bind(self.project_id)
            .bind(self.from_ms)
            .bind(self.to_ms)
            .bind(self.account_id)
            .bind(self.account_id)
            .bind(self.status)
            .bind(self.status)
            .bind(self.model)
            .bind(self.model)
            .bind(has_cursor)
            .bind(ts_ms)
            .bind(session_id)
            .bind(self.limit)
    }
}

/// How many sessions started in a range, and how many had errors ([`SESSIONS_STARTED`]).
pub struct SessionsStarted<'a> {
    pub project_id: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub account_id: &'a str,
    pub model: &'a str,
}

impl Params for SessionsStarted<'_> {
    fn query(&self) -> Query {
        SESSIONS_STARTED
    }
    fn bind(self, statement: Statement) -> Statement {
        statement
            .bind(self.project_id)
            .bind(self.from_ms)
            .bind(self.to_ms)
            .bind(self.account_id)
            .bind(self.account_id)
            .bind(self.model)
            .bind(self.model)
    }
}

/// Tool totals of a project by the hour ([`METRICS_TOOLS`]); an empty `tool` means all.
pub struct MetricsTools<'a> {
    pub project_id: &'a str,
    pub from: u32,
    pub to: u32,
    pub tool: &'a str,
}

impl Params for MetricsTools<'_> {
    fn query(&self) -> Query {
        METRICS_TOOLS
    }
    fn bind(self, statement: Statement) -> Statement {
        statement
            .bind(self.project_id)
            .bind(self.from)
            .bind(self.to)
            .bind(self.tool)
            .bind(self.tool)
    }
}

/// One account's usage per day since `first_day` ([`ACCOUNT_DAILY_USAGE`]).
pub struct AccountDailyUsage<'a> {
    pub project_id: &'a str,
    pub account_id: &'a str,
    pub first_day: u32,
}

impl Params for AccountDailyUsage<'_> {
    fn query(&self) -> Query {
        ACCOUNT_DAILY_USAGE
    }
    fn bind(self, statement: Statement) -> Statement {
        statement
            .bind(self.project_id)
            .bind(self.account_id)
            .bind(self.first_day)
    }
}

/// Month-level usage per account of a project ([`ACCOUNT_MONTH_USAGE`]).
pub struct AccountMonthUsage<'a> {
    pub project_id: &'a str,
}

impl Params for AccountMonthUsage<'_> {
    fn query(&self) -> Query {
        ACCOUNT_MONTH_USAGE
    }
    fn bind(self, statement: Statement) -> Statement {
        statement.bind(self.project_id)
    }
}

/// Usage totals per account and model of a project, from one rollup
/// ([`USAGE_TOTALS_HOURLY`], [`USAGE_TOTALS_DAILY`]).
pub struct UsageTotals<'a> {
    pub granularity: Granularity,
    pub project_id: &'a str,
}

impl Params for UsageTotals<'_> {
    fn query(&self) -> Query {
        match self.granularity {
            Granularity::Hour => USAGE_TOTALS_HOURLY,
            Granularity::Day => USAGE_TOTALS_DAILY,
        }
    }
    fn bind(self, statement: Statement) -> Statement {
        statement.bind(self.project_id)
    }
}

/// A project's usage rows in some buckets, partitions and accounts
/// ([`USAGE_HOURLY_GROUP`], [`USAGE_DAILY_GROUP`]).
pub struct UsageGroup<'a> {
    pub granularity: Granularity,
    pub project_id: &'a str,
    pub buckets: &'a [u32],
    pub partitions: &'a [i32],
    pub accounts: &'a [String],
}

impl Params for UsageGroup<'_> {
    fn query(&self) -> Query {
        match self.granularity {
            Granularity::Hour => USAGE_HOURLY_GROUP,
            Granularity::Day => USAGE_DAILY_GROUP,
        }
    }
    fn bind(self, statement: Statement) -> Statement {
        statement
            .bind(self.project_id)
            .bind(self.buckets)
            .bind(self.partitions)
            .bind(self.accounts)
    }
}

/// The sessions that have a row, of some partitions ([`PARTITION_SESSIONS`]).
pub struct PartitionSessions<'a> {
    pub partitions: &'a [i32],
}

impl Params for PartitionSessions<'_> {
    fn query(&self) -> Query {
        PARTITION_SESSIONS
    }
    fn bind(self, statement: Statement) -> Statement {
        statement.bind(self.partitions)
    }
}

/// The keys of a project's usage rows in some buckets and partitions
/// ([`USAGE_HOURLY_KEYS`], [`USAGE_DAILY_KEYS`]).
pub struct UsageKeys<'a> {
    pub granularity: Granularity,
    pub project_id: &'a str,
    pub buckets: &'a [u32],
    pub partitions: &'a [i32],
}

impl Params for UsageKeys<'_> {
    fn query(&self) -> Query {
        match self.granularity {
            Granularity::Hour => USAGE_HOURLY_KEYS,
            Granularity::Day => USAGE_DAILY_KEYS,
        }
    }
    fn bind(self, statement: Statement) -> Statement {
        statement
            .bind(self.project_id)
            .bind(self.buckets)
            .bind(self.partitions)
    }
}

/// A project's tool rows in some hours, partitions and tools ([`TOOL_USAGE_GROUP`]).
pub struct ToolUsageGroup<'a> {
    pub project_id: &'a str,
    pub buckets: &'a [u32],
    pub partitions: &'a [i32],
    pub tools: &'a [String],
}

impl Params for ToolUsageGroup<'_> {
    fn query(&self) -> Query {
        TOOL_USAGE_GROUP
    }
    fn bind(self, statement: Statement) -> Statement {
        statement
            .bind(self.project_id)
            .bind(self.buckets)
            .bind(self.partitions)
            .bind(self.tools)
    }
}

/// The raw events a rebuild of a partition folds again ([`REBUILD_EVENTS`]).
pub struct RebuildEvents {
    pub partition: i32,
    pub control_offset: u64,
    pub from_secs: i64,
    pub to_secs: i64,
}

impl Params for RebuildEvents {
    fn query(&self) -> Query {
        REBUILD_EVENTS
    }
    fn bind(self, statement: Statement) -> Statement {
        statement
            .bind(self.partition)
            .bind(self.control_offset)
            .bind(self.partition)
            .bind(self.control_offset)
            .bind(self.from_secs)
            .bind(self.to_secs)
    }
}

/// Event ids a partition received since a time ([`KNOWN_EVENTS`]).
pub struct KnownEvents {
    pub partition: i32,
    pub since_ms: i64,
}

impl Params for KnownEvents {
    fn query(&self) -> Query {
        KNOWN_EVENTS
    }
    fn bind(self, statement: Statement) -> Statement {
        statement.bind(self.partition).bind(self.since_ms)
    }
}

/// A partition's usage per account and bucket since a bucket
/// ([`PARTITION_HOURLY_USAGE_SINCE`], [`PARTITION_DAILY_USAGE_SINCE`]).
pub struct PartitionUsageSince {
    pub granularity: Granularity,
    pub partition: i32,
    pub since: u32,
}

impl Params for PartitionUsageSince {
    fn query(&self) -> Query {
        match self.granularity {
            Granularity::Hour => PARTITION_HOURLY_USAGE_SINCE,
            Granularity::Day => PARTITION_DAILY_USAGE_SINCE,
        }
    }
    fn bind(self, statement: Statement) -> Statement {
        statement.bind(self.partition).bind(self.since)
    }
}

/// A partition's requests and tokens per account and second since a second
/// ([`PARTITION_RECENT_SECONDS`]).
pub struct PartitionRecentSeconds {
    pub partition: i32,
    pub since: u32,
}

impl Params for PartitionRecentSeconds {
    fn query(&self) -> Query {
        PARTITION_RECENT_SECONDS
    }
    fn bind(self, statement: Statement) -> Statement {
        statement.bind(self.partition).bind(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The SQL of `params` as the client sends it; a placeholder left over shows as `?`, a
    /// value too many as the builder's error.
    fn sent<P: Params>(params: P) -> String {
        prepare(&clickhouse::Client::default(), params)
            .sql_display()
            .to_string()
    }

    fn assert_bound(sql: String) {
        assert!(!sql.contains('?'), "a placeholder is left unbound: {sql}");
        assert!(!sql.contains("unexpected bind"), "{sql}");
    }

    #[test]
    fn every_struct_binds_every_placeholder_of_its_query_and_no_more() {
        let ids = vec!["a".to_owned(), "b".to_owned()];
        let (buckets, partitions) = ([3_600_u32], [0_i32, 2]);
        for granularity in [Granularity::Hour, Granularity::Day] {
            assert_bound(sent(UsageTotals {
                granularity,
                project_id: "p",
            }));
            assert_bound(sent(UsageGroup {
                granularity,
                project_id: "p",
                buckets: &buckets,
                partitions: &partitions,
                accounts: &ids,
            }));
            assert_bound(sent(PartitionUsageSince {
                granularity,
                partition: 1,
                since: 0,
            }));
        }
        for after in [None, Some((5, "e"))] {
            assert_bound(sent(SessionTimeline {
                with_content: true,
                project_id: "p",
                session_id: "s",
                after,
                limit: 10,
            }));
            assert_bound(sent(SessionsPage {
                project_id: "p",
                from_ms: 0,
                to_ms: 1,
                account_id: "",
                status: "error",
                model: "",
                after,
                limit: 10,
            }));
        }
        assert_bound(sent(SessionRollup {
            project_id: "p",
            session_id: "s",
        }));
        assert_bound(sent(SessionsById {
            project_id: "p",
            session_ids: &ids,
        }));
        assert_bound(sent(SessionsStarted {
            project_id: "p",
            from_ms: 0,
            to_ms: 1,
            account_id: "a",
            model: "m",
        }));
        assert_bound(sent(MetricsTools {
            project_id: "p",
            from: 0,
            to: 3_600,
            tool: "",
        }));
        assert_bound(sent(AccountDailyUsage {
            project_id: "p",
            account_id: "a",
            first_day: 0,
        }));
        assert_bound(sent(AccountMonthUsage { project_id: "p" }));
        assert_bound(sent(ToolUsageGroup {
            project_id: "p",
            buckets: &buckets,
            partitions: &partitions,
            tools: &ids,
        }));
        assert_bound(sent(RebuildEvents {
            partition: 1,
            control_offset: 9,
            from_secs: 0,
            to_secs: 86_400,
        }));
        assert_bound(sent(KnownEvents {
            partition: 1,
            since_ms: 0,
        }));
        assert_bound(sent(PartitionRecentSeconds {
            partition: 1,
            since: 0,
        }));
    }

    #[test]
    fn a_repeated_value_goes_to_each_of_its_placeholders() {
        let sql = sent(SessionTimeline {
            with_content: false,
            project_id: "p",
            session_id: "s",
            after: Some((1_234_567, "e")),
            limit: 10,
        });
        assert_eq!(sql.matches("1234567").count(), 2, "{sql}");
    }
}
