//! The read queries, kept as SQL files so the cross-engine test runs exactly these.
//! Values are bound with `?` placeholders, in order, each query's from one struct of
//! [`params`].

pub mod params;

/// A named read query.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub name: &'static str,
    pub sql: &'static str,
}

/// A page of one session's events in order; ties on the timestamp are broken by `event_id`,
/// and copies of an event (redelivered, not yet merged) appear once.
/// Binds: with content (0/1), project_id, session_id, has_cursor (0/1), cursor ts_ms twice,
/// cursor event_id, limit.
pub const SESSION_TIMELINE: Query = Query {
    name: "session_timeline",
    sql: include_str!("../queries/session_timeline.sql"),
};

/// The rollup row of one session. Binds: project_id, session_id.
pub const SESSION_ROLLUP: Query = Query {
    name: "session_rollup",
    sql: include_str!("../queries/session_rollup.sql"),
};

/// Current rollups of several sessions of one project: for the aggregator to resume from, and
/// for a page of the sessions list. Binds: project_id, array of session_id.
pub const SESSIONS_BY_ID: Query = Query {
    name: "sessions_by_id",
    sql: include_str!("../queries/sessions_by_id.sql"),
};

/// Event ids one Kafka partition received since a time, to rebuild its dedup window.
/// Binds: kafka_partition, received_at_ms lower bound.
pub const KNOWN_EVENTS: Query = Query {
    name: "known_events",
    sql: include_str!("../queries/known_events.sql"),
};

/// Rows of `usage_hourly` of one project in some hours, partitions and accounts.
/// Binds: project_id, array of bucket (Unix seconds), array of kafka_partition, array of
/// account_id.
pub const USAGE_HOURLY_GROUP: Query = Query {
    name: "usage_hourly_group",
    sql: include_str!("../queries/usage_hourly_group.sql"),
};

/// Rows of `usage_daily` of one project in some days, partitions and accounts. Binds as
/// [`USAGE_HOURLY_GROUP`].
pub const USAGE_DAILY_GROUP: Query = Query {
    name: "usage_daily_group",
    sql: include_str!("../queries/usage_daily_group.sql"),
};

/// The sessions that have a row, of some partitions. Binds: array of kafka_partition.
pub const PARTITION_SESSIONS: Query = Query {
    name: "partition_sessions",
    sql: include_str!("../queries/partition_sessions.sql"),
};

/// The keys (account, model, operation) of the `usage_hourly` rows of one project in some
/// hours and partitions. Binds: project_id, array of bucket (Unix seconds), array of
/// kafka_partition.
pub const USAGE_HOURLY_KEYS: Query = Query {
    name: "usage_hourly_keys",
    sql: include_str!("../queries/usage_hourly_keys.sql"),
};

/// As [`USAGE_HOURLY_KEYS`], of `usage_daily`.
pub const USAGE_DAILY_KEYS: Query = Query {
    name: "usage_daily_keys",
    sql: include_str!("../queries/usage_daily_keys.sql"),
};

/// Rows of `tool_usage_hourly` of one project in some hours, partitions and tools.
/// Binds: project_id, array of bucket (Unix seconds), array of kafka_partition, array of
/// tool_name.
pub const TOOL_USAGE_GROUP: Query = Query {
    name: "tool_usage_group",
    sql: include_str!("../queries/tool_usage_group.sql"),
};

/// The raw events a rebuild folds again: those of one partition's sessions that have an
/// event in a time range, below the control record's offset, in offset order.
/// Binds: partition, offset, partition, offset, from (Unix s), to (Unix s).
pub const REBUILD_EVENTS: Query = Query {
    name: "rebuild_events",
    sql: include_str!("../queries/rebuild_events.sql"),
};

/// Usage totals per account and model of one project, over `usage_hourly`. Binds: project_id.
pub const USAGE_TOTALS_HOURLY: Query = Query {
    name: "usage_totals_hourly",
    sql: include_str!("../queries/usage_totals_hourly.sql"),
};

/// The same totals over `usage_daily`. Binds: project_id.
pub const USAGE_TOTALS_DAILY: Query = Query {
    name: "usage_totals_daily",
    sql: include_str!("../queries/usage_totals_daily.sql"),
};

/// Tokens, cost and LLM responses per account and calendar month (UTC), from the daily
/// rollup. Binds: project_id.
pub const ACCOUNT_MONTH_USAGE: Query = Query {
    name: "account_month_usage",
    sql: include_str!("../queries/account_month_usage.sql"),
};

/// The start and id of a page of a project's sessions that started in a time range, newest
/// first (start, then session id, both descending); [`SESSIONS_BY_ID`] reads their rows.
/// Binds: project_id, from_ms, to_ms, account_id twice, status (`ok`, `error` or empty) twice,
/// model twice, has_cursor (0/1), cursor start_ms, cursor session_id, limit. Empty filter
/// values filter nothing.
pub const SESSIONS_PAGE: Query = Query {
    name: "sessions_page",
    sql: include_str!("../queries/sessions_page.sql"),
};

/// Sessions that started in a time range, and how many of them had an error.
/// Binds: project_id, from_ms, to_ms, account_id twice, model twice.
pub const SESSIONS_STARTED: Query = Query {
    name: "sessions_started",
    sql: include_str!("../queries/sessions_started.sql"),
};

// The metrics queries below read one union of the usage rollups; its binds ("the rollup
// binds") are, in order: project_id, first day, end of days (Unix s), account_id twice,
// model twice, operation twice, for `usage_daily`; then project_id, two hour ranges (from,
// to; Unix s), account_id twice, model twice, operation twice, for `usage_hourly`.

/// Every usage counter summed over a range. Binds: the rollup binds.
pub const METRICS_TOTALS: Query = Query {
    name: "metrics_totals",
    sql: include_str!("../queries/metrics_totals.sql"),
};

/// Usage per bucket and group. Binds: bucket offset, step, step, offset (Unix s), group
/// (`model`, `operation`, `account` or empty) three times, the rollup binds, limit.
pub const METRICS_USAGE: Query = Query {
    name: "metrics_usage",
    sql: include_str!("../queries/metrics_usage.sql"),
};

/// Latency counts, sums and summed histograms per model. Binds: the rollup binds.
pub const METRICS_LATENCY: Query = Query {
    name: "metrics_latency",
    sql: include_str!("../queries/metrics_latency.sql"),
};

/// Cost per model, operation or account, costliest first. Binds: group three times, the
/// rollup binds, limit.
pub const METRICS_COST: Query = Query {
    name: "metrics_cost",
    sql: include_str!("../queries/metrics_cost.sql"),
};

/// Tool calls, results, errors and durations per tool over a range of hours.
/// Binds: project_id, from, to (Unix s), tool name twice.
pub const METRICS_TOOLS: Query = Query {
    name: "metrics_tools",
    sql: include_str!("../queries/metrics_tools.sql"),
};

/// Every query, for the cross-engine test.
pub const ALL: &[Query] = &[
    SESSION_TIMELINE,
    SESSION_ROLLUP,
    SESSIONS_BY_ID,
    KNOWN_EVENTS,
    USAGE_HOURLY_GROUP,
    USAGE_DAILY_GROUP,
    PARTITION_SESSIONS,
    USAGE_HOURLY_KEYS,
    USAGE_DAILY_KEYS,
    TOOL_USAGE_GROUP,
    REBUILD_EVENTS,
    USAGE_TOTALS_HOURLY,
    USAGE_TOTALS_DAILY,
    ACCOUNT_MONTH_USAGE,
    SESSIONS_PAGE,
    SESSIONS_STARTED,
    METRICS_TOTALS,
    METRICS_USAGE,
    METRICS_LATENCY,
    METRICS_COST,
    METRICS_TOOLS,
    ACCOUNT_DAILY_USAGE,
    PARTITION_DAILY_USAGE_SINCE,
    PARTITION_HOURLY_USAGE_SINCE,
    PARTITION_RECENT_SECONDS,
];

/// One account's usage per day, model and operation since a day.
/// Binds: project_id, account_id, first day (Unix seconds).
pub const ACCOUNT_DAILY_USAGE: Query = Query {
    name: "account_daily_usage",
    sql: include_str!("../queries/account_daily_usage.sql"),
};

/// One partition's usage per account and day since a day, for its quota counters.
/// Binds: kafka_partition, first day (Unix seconds).
pub const PARTITION_DAILY_USAGE_SINCE: Query = Query {
    name: "partition_daily_usage_since",
    sql: include_str!("../queries/partition_daily_usage_since.sql"),
};

/// One partition's usage per account and hour since an hour, for its quota counters.
/// Binds: kafka_partition, first hour (Unix seconds).
pub const PARTITION_HOURLY_USAGE_SINCE: Query = Query {
    name: "partition_hourly_usage_since",
    sql: include_str!("../queries/partition_hourly_usage_since.sql"),
};

/// One partition's LLM requests and tokens per account and second since a time.
/// Binds: kafka_partition, first second (Unix seconds).
pub const PARTITION_RECENT_SECONDS: Query = Query {
    name: "partition_recent_seconds",
    sql: include_str!("../queries/partition_recent_seconds.sql"),
};

/// The column names a query's outermost SELECT returns, in order: each item's alias, or the
/// column itself. Rows are read by position (RowBinary), so a row type's fields must follow
/// this order; each crate's tests check its row types against it with [`assert_columns`].
pub fn select_columns(sql: &str) -> Vec<String> {
    let text: String = sql
        .lines()
        .map(|line| line.split_once("--").map_or(line, |(code, _)| code))
        .collect::<Vec<_>>()
        .join(" ");
    let upper = text.to_ascii_uppercase();
    let Some(start) = upper.find("SELECT") else {
        return Vec::new();
    };
    let (mut depth, mut quoted, mut items, mut item) = (0i32, false, Vec::new(), String::new());
    let bytes = text.as_bytes();
    let mut i = start + "SELECT".len();
    while i < bytes.len() {
        let c = char::from(bytes[i]);
        if c == '\'' {
            quoted = !quoted;
        } else if !quoted {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(std::mem::take(&mut item));
                    i += 1;
                    continue;
                }
                _ if depth == 0 && upper[i..].starts_with("FROM") && upper[..i].ends_with(' ') => {
                    break
                }
                _ => {}
            }
        }
        item.push(c);
        i += 1;
    }
    items.push(item);
    items
        .iter()
        .map(|item| {
            let item = item.trim();
            // `SELECT DISTINCT a, b`: the keyword is not part of the first column.
            let item = match item.get(..9) {
                Some(head) if head.eq_ignore_ascii_case("DISTINCT ") => item[9..].trim(),
                _ => item,
            };
            let upper = item.to_ascii_uppercase();
            match upper.rfind(" AS ") {
                Some(at) => item[at + 4..].trim().to_owned(),
                None => item.rsplit('.').next().unwrap_or(item).trim().to_owned(),
            }
        })
        .collect()
}

/// Panics unless the row type `R` reads exactly the columns `query` returns, in order.
pub fn assert_columns<R: clickhouse::Row>(query: &Query) {
    assert_columns_after_prefix::<R>(query, "");
}

/// As [`assert_columns`], for a query whose sums are aliased `total_<column>`: ClickHouse 18.16
/// resolves an alias named like a column inside the aggregate that computes it.
pub fn assert_columns_after_prefix<R: clickhouse::Row>(query: &Query, prefix: &str) {
    let selected: Vec<String> = select_columns(query.sql)
        .into_iter()
        .map(|c| c.strip_prefix(prefix).map(str::to_owned).unwrap_or(c))
        .collect();
    assert_eq!(
        selected,
        R::COLUMN_NAMES,
        "query {}: its SELECT returns {selected:?}, the row type reads {:?}",
        query.name,
        R::COLUMN_NAMES
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_select_list_is_read_with_aliases_and_without_subqueries() {
        let sql = "-- a comment, FROM nothing\nSELECT a, sum(b) AS total_b, multiIf(? = 'x, y', c, '') AS k,\n t.d\nFROM (SELECT z AS a FROM t) AS t WHERE 1";
        assert_eq!(select_columns(sql), ["a", "total_b", "k", "d"]);
        let distinct = "SELECT DISTINCT bucket, x.account_id FROM t";
        assert_eq!(select_columns(distinct), ["bucket", "account_id"]);
    }

    #[test]
    fn the_session_queries_read_session_rows() {
        assert_columns::<crate::rows::SessionRow>(&SESSION_ROLLUP);
        assert_columns::<crate::rows::SessionRow>(&SESSIONS_BY_ID);
        assert_columns::<crate::rows::EventRow>(&SESSION_TIMELINE);
        assert_columns::<crate::rows::EventRow>(&REBUILD_EVENTS);
        assert_columns::<crate::rollups::UsageRow>(&USAGE_HOURLY_GROUP);
        assert_columns::<crate::rollups::UsageRow>(&USAGE_DAILY_GROUP);
        assert_columns::<crate::rollups::ToolRow>(&TOOL_USAGE_GROUP);
    }
}

#[cfg(test)]
mod mismatch {
    #[test]
    #[should_panic(expected = "known_events")]
    fn a_row_type_that_reads_other_columns_is_caught() {
        super::assert_columns::<crate::rows::SessionRow>(&super::KNOWN_EVENTS);
    }
}
