"""Every migration and every read query runs on ClickHouse 18.16 (the local server) and on
current ClickHouse (chDB), over the same rows, with the same answers.

The SQL comes from schema/migrations and schema/queries, the files the services embed.
"""

import os
import pathlib
import re
import urllib.parse
import urllib.request
import uuid

import chdb.session
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MIGRATIONS = sorted((ROOT / "schema" / "migrations").glob("*.sql"))
QUERIES = {p.stem: p.read_text() for p in sorted((ROOT / "schema" / "queries").glob("*.sql"))}
SERVER_URL = os.environ.get("TALLY_TEST_CLICKHOUSE", "http://127.0.0.1:8123")


def split_statements(sql):
    """The same rule as schema::migrations::split_statements: `;` at a line end."""
    statements, current = [], []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        if stripped.endswith(";"):
            statements.append("\n".join(current).strip().rstrip(";").strip())
            current = []
    if "".join(current).strip():
        statements.append("\n".join(current).strip())
    return statements


def literal(value):
    """A bound value as the clickhouse crate renders it client-side."""
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(literal(v) for v in value) + "]"
    return str(int(value))


def bind(sql, values):
    parts = sql.split("?")
    assert len(parts) - 1 == len(values), f"{len(parts) - 1} placeholders, {len(values)} values"
    out = parts[0]
    for value, rest in zip(values, parts[1:]):
        out += literal(value) + rest
    return out


class Server:
    name = "clickhouse-18.16"

    def __init__(self):
        self.database = "tally_xengine_" + uuid.uuid4().hex
        self._post(f"CREATE DATABASE {self.database}", database=None)

    def _post(self, sql, database="default"):
        params = {"database": self.database if database == "default" else database}
        params = {k: v for k, v in params.items() if v}
        url = SERVER_URL + "/?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(urllib.request.Request(url, data=sql.encode())) as response:
            return response.read().decode()

    def execute(self, sql):
        return self._post(sql)

    def version(self):
        return self._post("SELECT version()").strip()

    def close(self):
        self._post(f"DROP DATABASE IF EXISTS {self.database}", database=None)


class Chdb:
    name = "chdb"

    def __init__(self):
        self.session = chdb.session.Session()
        self.database = "tally_xengine_" + uuid.uuid4().hex
        self.session.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self.session.query(f"USE {self.database}")

    def execute(self, sql):
        return str(self.session.query(sql, "TabSeparated"))

    def version(self):
        return self.execute("SELECT version()").strip()

    def close(self):
        self.session.close()


def load(engine):
    """Migrations, then the fixtures. Merges are stopped first: a superseded row or a stored
    copy of an event stays until a query's FINAL (or LIMIT BY) removes it, so a query that
    forgets to do so gives a wrong answer here instead of one that background merges fixed."""
    for path in MIGRATIONS:
        for statement in split_statements(path.read_text()):
            engine.execute(statement)
    for table in ("events", "sessions", "usage_hourly", "usage_daily", "tool_usage_hourly"):
        engine.execute(f"SYSTEM STOP MERGES {table}")
    for statement in FIXTURES:
        engine.execute(statement)


@pytest.fixture(params=[Server, Chdb], ids=["clickhouse-18.16", "chdb"], scope="module")
def engine(request):
    engine = request.param()
    load(engine)
    yield engine
    engine.close()


EVENT_COLUMNS = (
    "project_id, session_id, event_id, event_type, ts, ts_ms, account_id, trace_id, span_id, "
    "parent_span_id, operation, model, provider, input_tokens, output_tokens, cache_read_tokens, "
    "cache_write_tokens, provided_cost_nanos, duration_ms, time_to_first_token_ms, status, tool_name, "
    "tool_call_id, error_type, error_message, error_stack, content, attributes, received_at_ms, "
    "kafka_partition, kafka_offset"
)


def event(project, session, event_id, kind, ts_ms, offset, tokens=0, received=1_763_800_000_000, partition=0):
    values = [
        project, session, event_id, kind, ts_ms // 1000, ts_ms, "acct-1", "", "", "", "chat", "gpt-4o",
        "openai", tokens, tokens // 2, 0, 0, None, None, None, "ok", "", "", "", "", "", "", "",
        received, partition, offset,
    ]
    rendered = ",".join("NULL" if v is None else literal(v) for v in values)
    return f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ({rendered})"


SESSION_COLUMNS = (
    "project_id, session_id, account_id, first_ts_ms, last_ts_ms, event_count, event_types, "
    "event_type_counts, llm_calls, tool_calls, errors, input_tokens, output_tokens, cache_read_tokens, "
    "cache_write_tokens, cost_nanos, provided_cost_nanos, unpriced_events, models, ended, "
    "kafka_partition, kafka_offset"
)


def session(project, session_id, count, offset):
    values = [
        project, session_id, "acct-1", 1_763_800_000_000, 1_763_800_005_000, count, ["llm_request"],
        [count], count, 0, 0, 10 * count, 5 * count, 0, 0, 9 * count, 7 * count, 0, ["gpt-4o"], 0,
        0, offset,
    ]
    return f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ({','.join(literal(v) for v in values)})"


USAGE_COLUMNS = (
    "project_id, bucket, account_id, model, operation, kafka_partition, events, llm_requests, "
    "llm_responses, errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
    "cost_nanos, provided_cost_nanos, unpriced_events, duration_count, duration_sum_ms, "
    "duration_hist, ttft_count, ttft_sum_ms, ttft_hist, kafka_offset"
)


def usage(table, bucket, account, partition, events, offset):
    hist = [0] * 98
    hist[33] = events
    values = [
        "a", bucket, account, "gpt-4o", "chat", partition, events, events, events, 0, 100 * events,
        10 * events, 0, 0, 350 * events, 0, 0, events, 120 * events, hist, 0, 0, [], offset,
    ]
    return f"INSERT INTO {table} ({USAGE_COLUMNS}) VALUES ({','.join(literal(v) for v in values)})"


def tool(bucket, name, partition, calls, offset, project="a", errors=0):
    values = [project, bucket, name, partition, 2 * calls, calls, calls, errors, calls, 40 * calls, [calls], offset]
    columns = (
        "project_id, bucket, tool_name, kafka_partition, events, calls, results, errors, "
        "duration_count, duration_sum_ms, duration_hist, kafka_offset"
    )
    return f"INSERT INTO tool_usage_hourly ({columns}) VALUES ({','.join(literal(v) for v in values)})"


def read_session(project, session_id, account, first_ts, errors, models, offset):
    values = [
        project, session_id, account, first_ts, first_ts + 5_000, 3, ["llm_request"], [3], 3, 0, errors,
        30, 15, 0, 0, 27, 21, 0, models, 0, 0, offset,
    ]
    return f"INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ({','.join(literal(v) for v in values)})"


LATENCY_BOUNDS_MS = [round(10 ** (i / 16)) for i in range(97)]


def hist(*latencies):
    """A latency histogram as the aggregator keeps it (98 counters)."""
    counts = [0] * 98
    for ms in latencies:
        counts[next((i for i, bound in enumerate(LATENCY_BOUNDS_MS) if bound >= ms), 97)] += 1
    return counts


def nonzero(counts):
    """A histogram as `bucket:count` pairs, for expectations."""
    return ",".join(f"{i}:{c}" for i, c in enumerate(counts) if c)


def rollup(table, bucket, account, model, operation, partition, events, offset, durations=(), project="r", adjusted=0):
    """A usage row whose counters all follow from `events`, the LLM response durations and the
    adjusted tokens."""
    ttfts = [d // 4 for d in durations]
    values = [
        project, bucket, account, model, operation, partition, events, events, len(durations), events // 4,
        10 * events, 3 * events, events, events // 2, 100 * events, 7 * events, 0,
        len(durations), sum(durations), hist(*durations) if durations else [],
        len(ttfts), sum(ttfts), hist(*ttfts) if ttfts else [], offset, adjusted,
    ]
    columns = USAGE_COLUMNS + ", adjusted_tokens"
    return f"INSERT INTO {table} ({columns}) VALUES ({','.join(literal(v) for v in values)})"


T0 = 1_763_800_000_000
HOUR = 1_763_798_400
DAY = 1_763_769_600
# The read API's fixtures (project r): an hour before DAY, an hour into it, two hours into
# the next day; every daily row is the sum of its day's hourly rows, as the aggregator writes.
# Their rows are on partitions 3 and 4, out of the way of the partition-scoped queries.
H1, H2, H3 = DAY - 3600, DAY + 3600, DAY + 86400 + 7200
READ_FIXTURES = [
    rollup("usage_hourly", H1, "acct-1", "gpt-4o", "chat", 3, 2, 5, [120]),
    # Superseded by the next row (a later fold of the same bucket): FINAL keeps the newer.
    rollup("usage_hourly", H2, "acct-1", "gpt-4o", "chat", 3, 3, 10, [200]),
    rollup("usage_hourly", H2, "acct-1", "gpt-4o", "chat", 3, 5, 12, [200, 900]),
    rollup("usage_hourly", H2, "acct-2", "claude", "email", 4, 4, 7, [1500], adjusted=-40),
    rollup("usage_hourly", H3, "acct-1", "gpt-4o", "chat", 3, 1, 20),
    rollup("usage_hourly", H2, "acct-1", "gpt-4o", "chat", 3, 50, 3, [100], project="q"),
    rollup("usage_daily", DAY - 86400, "acct-1", "gpt-4o", "chat", 3, 2, 5, [120]),
    rollup("usage_daily", DAY, "acct-1", "gpt-4o", "chat", 3, 3, 10, [200]),
    rollup("usage_daily", DAY, "acct-1", "gpt-4o", "chat", 3, 5, 12, [200, 900]),
    rollup("usage_daily", DAY, "acct-2", "claude", "email", 4, 4, 7, [1500], adjusted=-40),
    rollup("usage_daily", DAY + 86400, "acct-1", "gpt-4o", "chat", 3, 1, 20),
    rollup("usage_daily", DAY, "acct-1", "gpt-4o", "chat", 3, 50, 3, [100], project="q"),
    tool(H2, "search", 3, 1, 3, project="r"),
    tool(H2, "search", 3, 4, 9, project="r", errors=2),
    tool(H3, "search", 4, 2, 2, project="r", errors=1),
    tool(H1, "calc", 3, 3, 1, project="r", errors=1),
    tool(H2, "search", 3, 9, 1, project="q"),
    # s1 was first folded without errors; a late event then moved its start an hour earlier
    # and two failures and a second model came: only the newer row may match any filter.
    read_session("r", "s1", "acct-1", T0, 0, ["gpt-4o"], 5),
    read_session("r", "s1", "acct-1", T0 - 3_600_000, 2, ["claude", "gpt-4o"], 9),
    read_session("r", "s2", "acct-2", T0 + 1000, 0, ["claude"], 3),
    read_session("r", "s3", "acct-1", T0 + 1000, 1, ["gpt-4o"], 4),
    read_session("r", "s4", "acct-1", T0 + 2 * 86_400_000, 0, ["gpt-4o"], 6),
    read_session("q", "s9", "acct-1", T0, 1, ["gpt-4o"], 2),
    # Two events at the same millisecond, and a record folded twice (the copy with the higher
    # offset is the one a timeline shows), on partition 1, away from the partition-0 queries.
    event("r", "t1", "t-2", "llm_request", T0, 2, partition=1),
    event("r", "t1", "t-1", "session_start", T0, 1, partition=1),
    event("r", "t1", "t-3", "llm_response", T0 + 10, 3, tokens=10, partition=1),
    event("r", "t1", "t-3", "llm_response", T0 + 10, 7, tokens=99, partition=1),
]


def rollup_binds(days=(0, 0), hours=((0, 0), (0, 0)), project="r", account="", model="", operation=""):
    """The binds of the rollup union of the metrics queries (schema::queries)."""
    filters = [account, account, model, model, operation, operation]
    return [project, *days, *filters, project, *hours[0], *hours[1], *filters]


# [H1, H3 + 1 h) splits into whole day DAY from the daily rollup and the hours around it.
SPLIT = rollup_binds(days=(DAY, DAY + 86400), hours=((H1, DAY), (DAY + 86400, H3 + 3600)))
THREE_DAYS = rollup_binds(days=(DAY - 86400, DAY + 2 * 86400))
HOURS_ONLY = rollup_binds(hours=((H1, H3 + 3600), (0, 0)))
NO_FILTER = ["", ""] * 3
SESSION_RANGE = [T0 - 7_200_000, T0 + 86_400_000]
FIXTURES = [
    event("a", "s1", "e-3", "llm_response", T0 + 2000, 3, tokens=40),
    event("a", "s1", "e-1", "session_start", T0, 1),
    # Two events at the same millisecond: the timeline orders them by event_id.
    event("a", "s1", "e-2b", "llm_request", T0 + 1000, 2),
    event("a", "s1", "e-2a", "user_message", T0 + 1000, 0),
    # The same record stored twice (redelivered after a crash) collapses to one event.
    event("a", "s1", "e-3", "llm_response", T0 + 2000, 3, tokens=40),
    event("b", "s1", "e-9", "session_start", T0, 4),
    event("a", "s2", "e-4", "session_start", T0 + 50, 5, received=T0 - 10_000_000),
    session("a", "s1", 3, 5),
    session("a", "s1", 4, 9),
    session("a", "s2", 1, 5),
    session("b", "s1", 1, 4),
    # Partition 0's row of an hour, written twice (the later fold wins), and partition 1's.
    usage("usage_hourly", HOUR, "acct-1", 0, 3, 10),
    usage("usage_hourly", HOUR, "acct-1", 0, 5, 14),
    usage("usage_hourly", HOUR, "acct-2", 0, 1, 14),
    usage("usage_hourly", HOUR, "acct-1", 1, 2, 7),
    usage("usage_daily", DAY, "acct-1", 0, 5, 14),
    tool(HOUR, "search", 0, 1, 3),
    tool(HOUR, "search", 0, 4, 9),
    tool(HOUR, "search", 1, 2, 2),
    *READ_FIXTURES,
    # Rows at the integers' limits on partition 7: their sums pass Int64 and must saturate,
    # never wrap to a negative usage.
    *(
        f"INSERT INTO {table} (project_id, bucket, account_id, model, operation, kafka_partition, "
        f"input_tokens, output_tokens, cost_nanos, kafka_offset) VALUES ('big', {bucket}, 'acct-big', "
        f"'{model}', 'chat', 7, 18446744073709551615, 18446744073709551615, 9000000000000000000, 1)"
        for table, bucket in (("usage_daily", DAY), ("usage_hourly", HOUR))
        for model in ("a", "b")
    ),
]

# Each query file: its binds, and the rows (TabSeparated) both engines must return.
EXPECTED = {
    "session_timeline": ([1, "a", "s1", 0, 0, 0, "", 1000], ["e-1", "e-2a", "e-2b", "e-3"]),
    "session_rollup": (["a", "s1"], ["s1 4 9"]),
    "sessions_by_id": (["a", ["s1", "s2", "missing"]], ["s1 4 9", "s2 1 5"]),
    "known_events": ([0, T0 - 1000], ["a e-1 1", "a e-2a 0", "a e-2b 2", "a e-3 3", "b e-9 4"]),
    "usage_hourly_group": (["a", [HOUR], [0], ["acct-1", "acct-2", "missing"]], ["acct-1 5 14", "acct-2 1 14"]),
    "usage_daily_group": (["a", [DAY, DAY - 86400], [0, 5], ["acct-1"]], ["acct-1 5 14"]),
    "tool_usage_group": (["a", [HOUR], [0], ["search", "missing"]], ["search 4 9"]),
    # Which sessions and usage rows exist at all (any version).
    "partition_sessions": (
        [[0, 5]],
        ["0 a s1", "0 a s2", "0 b s1", "0 q s9", "0 r s1", "0 r s2", "0 r s3", "0 r s4"],
    ),
    "usage_hourly_keys": (
        ["a", [HOUR], [0, 1]],
        [f"{HOUR} 0 acct-1 gpt-4o chat", f"{HOUR} 0 acct-2 gpt-4o chat", f"{HOUR} 1 acct-1 gpt-4o chat"],
    ),
    "usage_daily_keys": (["a", [DAY, DAY - 86400], [0, 5]], [f"{DAY} 0 acct-1 gpt-4o chat"]),
    # Sessions of partition 0 with an event in [T0 - 10 s, T0 + 10 s), below offset 5, in
    # offset order: a/s1 whole (its duplicate e-3 once) and b/s1; a/s2's event is at offset 5.
    # Partition 0's latest acct-1 row (5 events) plus partition 1's (2) and acct-2's (1).
    "usage_totals_hourly": (["a"], ["acct-1 7 700", "acct-2 1 100"]),
    "usage_totals_daily": (["a"], ["acct-1 5 500"]),
    "account_month_usage": (["a"], ["acct-1 2025-11-01 550 1750"]),
    "account_daily_usage": (["a", "acct-1", DAY], ["1763769600 gpt-4o chat 550 0 1750 5"]),
    "partition_daily_usage_since": ([0, DAY], ["a acct-1 1763769600 550 1750 14"]),
    "partition_hourly_usage_since": (
        [0, HOUR],
        ["a acct-1 1763798400 550 1750 14", "a acct-2 1763798400 110 350 14"],
    ),
    # e-3 was stored twice and counts once; e-2b is the one llm_request.
    "partition_recent_seconds": (
        [0, T0 // 1000 - 10],
        ["a acct-1 1763800000 0 0", "a acct-1 1763800001 1 0", "a acct-1 1763800002 0 60", "b acct-1 1763800000 0 0"],
    ),
    "rebuild_events": (
        [0, 5, 0, 5, T0 // 1000 - 10, T0 // 1000 + 10],
        ["e-2a", "e-1", "e-2b", "e-3", "e-9"],
    ),
    # Newest first, ties on the start by session id; s1 by its newer start; s4 out of range.
    "sessions_page": (["r", *SESSION_RANGE, *NO_FILTER, 0, 0, "", 10], ["s3", "s2", "s1"]),
    "sessions_started": (["r", *SESSION_RANGE, "", "", "", ""], ["3 2"]),
    # H1's hour, DAY whole (the newer of its two acct-1 rows, and acct-2's) and H3's hour.
    "metrics_totals": (SPLIT, ["12 12 4 2 120 36 12 5 -40 1200 84 0 4 2720 4 680"]),
    "metrics_usage": (
        [0, 86400, 86400, 0, "model", "model", "model", *THREE_DAYS, 100],
        [f"{DAY - 86400} gpt-4o 2 200", f"{DAY} claude 4 400", f"{DAY} gpt-4o 5 500", f"{DAY + 86400} gpt-4o 1 100"],
    ),
    "metrics_latency": (
        SPLIT,
        [
            f"claude 1 1500 {nonzero(hist(1500))} 1 375 {nonzero(hist(375))}",
            f"gpt-4o 3 1220 {nonzero(hist(120, 200, 900))} 3 305 {nonzero(hist(30, 50, 225))}",
        ],
    ),
    "metrics_cost": (["model"] * 3 + SPLIT + [10], ["gpt-4o 800 0", "claude 400 -40"]),
    "metrics_tools": (["r", DAY, DAY + 2 * 86400, "", ""], ["search 6 6 3 6 240 [6]"]),
}

# Further cases of some queries: filters, cursors, limits, other granularities.
MORE_CASES = {
    "session_timeline": [
        # Pages: the first two events, then what follows e-2a (same millisecond as e-2b).
        ([1, "a", "s1", 0, 0, 0, "", 2], ["e-1", "e-2a"]),
        ([1, "a", "s1", 1, T0 + 1000, T0 + 1000, "e-2a", 1000], ["e-2b", "e-3"]),
        ([0, "a", "s1", 1, T0 + 2000, T0 + 2000, "e-3", 1000], []),
    ],
    "partition_sessions": [([[5]], [])],
    "usage_hourly_keys": [
        (["r", [HOUR], [0, 1]], []),
        (["big", [HOUR], [7]], [f"{HOUR} 7 acct-big a chat", f"{HOUR} 7 acct-big b chat"]),
    ],
    "partition_daily_usage_since": [
        ([7, DAY], [f"big acct-big {DAY} 9223372036854775807 9223372036854775807 1"]),
    ],
    "partition_hourly_usage_since": [
        ([7, HOUR], [f"big acct-big {HOUR} 9223372036854775807 9223372036854775807 1"]),
    ],
    "sessions_page": [
        # The older row of s1 has no error; it must not make s1 match `ok`.
        (["r", *SESSION_RANGE, "", "", "ok", "ok", "", "", 0, 0, "", 10], ["s2"]),
        (["r", *SESSION_RANGE, "", "", "error", "error", "", "", 0, 0, "", 10], ["s3", "s1"]),
        (["r", *SESSION_RANGE, "", "", "", "", "claude", "claude", 0, 0, "", 10], ["s2", "s1"]),
        (["r", *SESSION_RANGE, "acct-2", "acct-2", "", "", "", "", 0, 0, "", 10], ["s2"]),
        (["r", *SESSION_RANGE, *NO_FILTER, 0, 0, "", 1], ["s3"]),
        (["r", *SESSION_RANGE, *NO_FILTER, 1, T0 + 1000, "s3", 10], ["s2", "s1"]),
        (["r", *SESSION_RANGE, *NO_FILTER, 1, T0 + 1000, "s2", 10], ["s1"]),
        # s1's older row started at T0, inside this range; its newer one did not.
        (["r", T0, T0 + 86_400_000, *NO_FILTER, 0, 0, "", 10], ["s3", "s2"]),
        (["q", *SESSION_RANGE, *NO_FILTER, 0, 0, "", 10], ["s9"]),
    ],
    "sessions_started": [
        (["r", *SESSION_RANGE, "acct-1", "acct-1", "", ""], ["2 2"]),
        (["r", *SESSION_RANGE, "", "", "claude", "claude"], ["2 1"]),
        (["r", T0, T0 + 86_400_000, "", "", "", ""], ["2 1"]),
    ],
    "metrics_totals": [
        (rollup_binds(days=SPLIT[1:3], hours=((H1, DAY), (DAY + 86400, H3 + 3600)), model="claude"),
         ["4 4 1 1 40 12 4 2 -40 400 28 0 1 1500 1 375"]),
        (rollup_binds(days=SPLIT[1:3], hours=((H1, DAY), (DAY + 86400, H3 + 3600)), project="q"),
         ["50 50 1 12 500 150 50 25 0 5000 350 0 1 100 1 25"]),
    ],
    "metrics_usage": [
        (
            [0, 3600, 3600, 0, "account", "account", "account", *HOURS_ONLY, 100],
            [f"{H1} acct-1 2 200", f"{H2} acct-1 5 500", f"{H2} acct-2 4 400", f"{H3} acct-1 1 100"],
        ),
        # ISO weeks: DAY is a Saturday; its week started on Monday 2025-11-17.
        ([345600, 604800, 604800, 345600, "", "", "", *THREE_DAYS, 100], ["1763337600  12 1200"]),
        ([0, 86400, 86400, 0, "operation", "operation", "operation", *THREE_DAYS, 2],
         [f"{DAY - 86400} chat 2 200", f"{DAY} chat 5 500"]),
    ],
    "metrics_cost": [
        (["account"] * 3 + SPLIT + [1], ["acct-1 800 0"]),
        (["operation"] * 3 + rollup_binds(days=SPLIT[1:3], hours=((H1, DAY), (DAY + 86400, H3 + 3600)), account="acct-2") + [10],
         ["email 400 -40"]),
    ],
    "metrics_tools": [(["r", H1, DAY, "calc", "calc"], ["calc 3 3 1 3 120 [3]"])],
}
ORDERED = ("session_timeline", "rebuild_events", "sessions_page", "metrics_usage", "metrics_cost")


def summarize(name, output):
    """The columns each expectation looks at."""
    rows = [line.split("\t") for line in output.splitlines() if line]
    if name in ("session_timeline", "rebuild_events"):
        return [r[2] for r in rows]
    if name in ("session_rollup", "sessions_by_id"):
        return sorted(f"{r[1]} {r[5]} {r[22]}" for r in rows)
    if name == "known_events":
        return sorted(f"{r[0]} {r[1]} {r[2]}" for r in rows)
    if name in ("usage_hourly_group", "usage_daily_group"):
        return sorted(f"{r[2]} {r[6]} {r[24]}" for r in rows)
    if name in ("usage_totals_hourly", "usage_totals_daily"):
        return sorted(f"{r[0]} {r[2]} {r[3]}" for r in rows)
    if name == "account_month_usage":
        return sorted(f"{r[0]} {r[1]} {r[2]} {r[3]}" for r in rows)
    if name == "partition_sessions":
        return sorted({" ".join(r) for r in rows})  # versions not yet merged collapse here
    if name == "tool_usage_group":
        return sorted(f"{r[2]} {r[5]} {r[11]}" for r in rows)
    if name == "sessions_page":
        return [r[1] for r in rows]
    if name in ("sessions_started", "metrics_totals"):
        return [" ".join(r) for r in rows]
    if name == "metrics_usage":
        return [f"{r[0]} {r[1]} {r[2]} {r[11]}" for r in rows]
    if name == "metrics_latency":
        as_hist = lambda text: nonzero(int(c) for c in text.strip("[]").split(",") if c)
        return sorted(f"{r[0]} {r[1]} {r[2]} {as_hist(r[3])} {r[4]} {r[5]} {as_hist(r[6])}" for r in rows)
    if name == "metrics_cost":
        return [f"{r[0]} {r[1]} {r[9]}" for r in rows]
    if name in (
        "metrics_tools",
        "account_daily_usage",
        "partition_daily_usage_since",
        "partition_hourly_usage_since",
        "partition_recent_seconds",
        "usage_hourly_keys",
        "usage_daily_keys",
    ):
        return sorted(" ".join(r) for r in rows)
    raise AssertionError(f"no summary for {name}")


def test_every_query_file_has_an_expectation():
    assert sorted(QUERIES) == sorted(EXPECTED)


CASES = [(name, *EXPECTED[name]) for name in sorted(EXPECTED)] + [
    (name, binds, expected) for name, cases in sorted(MORE_CASES.items()) for binds, expected in cases
]


@pytest.mark.parametrize("name,binds,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_query_answers(engine, name, binds, expected):
    output = engine.execute(bind(QUERIES[name], binds) + "\nFORMAT TabSeparated")
    assert summarize(name, output) == expected


def test_a_timeline_shows_one_copy_of_each_event_in_order(engine):
    output = engine.execute(bind(QUERIES["session_timeline"], [1, "r", "t1", 0, 0, 0, "", 1000]) + "\nFORMAT TabSeparated")
    rows = [line.split("\t") for line in output.splitlines()]
    assert [(r[2], r[13]) for r in rows] == [("t-1", "0"), ("t-2", "0"), ("t-3", "99")]


def test_engines_agree_row_for_row():
    server, embedded = Server(), Chdb()
    try:
        for engine in (server, embedded):
            load(engine)
        assert server.version().startswith("18.16"), server.version()
        assert int(embedded.version().split(".")[0]) >= 24, embedded.version()
        for name, binds, _ in CASES + [("session_timeline", [1, "r", "t1", 0, 0, 0, "", 1000], None)]:
            sql = bind(QUERIES[name], binds) + "\nFORMAT TabSeparated"
            ordered = name in ORDERED
            normalize = lambda out: out.splitlines() if ordered else sorted(out.splitlines())
            assert normalize(server.execute(sql)) == normalize(embedded.execute(sql)), name
    finally:
        server.close()
        embedded.close()


def test_migrations_are_idempotent(engine):
    """CREATE statements can run twice; ALTERs cannot on 18.16 (no ADD COLUMN IF NOT EXISTS),
    which is why the migration runner records applied versions in tally_migrations."""
    for path in MIGRATIONS:
        for statement in split_statements(path.read_text()):
            if not statement.lstrip().upper().startswith("ALTER"):
                engine.execute(statement)


def test_bind_refuses_a_count_mismatch():
    with pytest.raises(AssertionError):
        bind("SELECT ? + ?", [1])
    assert bind("SELECT ?", ["it's"]) == "SELECT 'it\\'s'"
