//! The read queries, kept as SQL files so the cross-engine test runs exactly these.
//! Values are bound with `?` placeholders, in order.

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
