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


@pytest.fixture(params=[Server, Chdb], ids=["clickhouse-18.16", "chdb"], scope="module")
def engine(request):
    engine = request.param()
    for path in MIGRATIONS:
        for statement in split_statements(path.read_text()):
            engine.execute(statement)
    for statement in FIXTURES:
        engine.execute(statement)
    yield engine
    engine.close()


EVENT_COLUMNS = (
    "project_id, session_id, event_id, event_type, ts, ts_ms, account_id, trace_id, span_id, "
    "parent_span_id, operation, model, provider, input_tokens, output_tokens, cache_read_tokens, "
    "cache_write_tokens, provided_cost_nanos, duration_ms, time_to_first_token_ms, status, tool_name, "
    "tool_call_id, error_type, error_message, error_stack, content, attributes, received_at_ms, "
    "kafka_partition, kafka_offset"
)


def event(project, session, event_id, kind, ts_ms, offset, tokens=0, received=1_763_800_000_000):
    values = [
        project, session, event_id, kind, ts_ms // 1000, ts_ms, "acct-1", "", "", "", "chat", "gpt-4o",
        "openai", tokens, tokens // 2, 0, 0, None, None, None, "ok", "", "", "", "", "", "", "",
        received, 0, offset,
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


def tool(bucket, name, partition, calls, offset):
    values = ["a", bucket, name, partition, 2 * calls, calls, calls, 0, calls, 40 * calls, [calls], offset]
    columns = (
        "project_id, bucket, tool_name, kafka_partition, events, calls, results, errors, "
        "duration_count, duration_sum_ms, duration_hist, kafka_offset"
    )
    return f"INSERT INTO tool_usage_hourly ({columns}) VALUES ({','.join(literal(v) for v in values)})"


T0 = 1_763_800_000_000
HOUR = 1_763_798_400
DAY = 1_763_769_600
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
]

# Each query file: its binds, and the rows (TabSeparated) both engines must return.
EXPECTED = {
    "session_timeline": (["a", "s1"], ["e-1", "e-2a", "e-2b", "e-3"]),
    "session_rollup": (["a", "s1"], ["s1 4 9"]),
    "sessions_by_id": (["a", ["s1", "s2", "missing"]], ["s1 4 9", "s2 1 5"]),
    "known_events": ([0, T0 - 1000], ["a e-1 1", "a e-2a 0", "a e-2b 2", "a e-3 3", "b e-9 4"]),
    "usage_hourly_group": (["a", HOUR, 0], ["acct-1 5 14", "acct-2 1 14"]),
    "usage_daily_group": (["a", DAY, 0], ["acct-1 5 14"]),
    "tool_usage_group": (["a", HOUR, 0], ["search 4 9"]),
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
}


def summarize(name, output):
    """The columns each expectation looks at."""
    rows = [line.split("\t") for line in output.splitlines() if line]
    if name in ("session_timeline", "rebuild_events"):
        return [r[2] for r in rows]
    if name in ("session_rollup", "sessions_by_id"):
        return sorted(f"{r[1]} {r[5]} {r[21]}" for r in rows)
    if name == "known_events":
        return sorted(f"{r[0]} {r[1]} {r[2]}" for r in rows)
    if name in ("usage_hourly_group", "usage_daily_group"):
        return sorted(f"{r[2]} {r[6]} {r[24]}" for r in rows)
    if name in ("usage_totals_hourly", "usage_totals_daily"):
        return sorted(f"{r[0]} {r[2]} {r[3]}" for r in rows)
    if name == "account_month_usage":
        return sorted(f"{r[0]} {r[1]} {r[2]} {r[3]}" for r in rows)
    if name == "tool_usage_group":
        return sorted(f"{r[2]} {r[5]} {r[11]}" for r in rows)
    if name in (
        "account_daily_usage",
        "partition_daily_usage_since",
        "partition_hourly_usage_since",
        "partition_recent_seconds",
    ):
        return sorted(" ".join(r) for r in rows)
    raise AssertionError(f"no summary for {name}")


def test_every_query_file_has_an_expectation():
    assert sorted(QUERIES) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_query_answers(engine, name):
    binds, expected = EXPECTED[name]
    output = engine.execute(bind(QUERIES[name], binds) + "\nFORMAT TabSeparated")
    assert summarize(name, output) == expected


def test_engines_agree_row_for_row():
    server, embedded = Server(), Chdb()
    try:
        for engine in (server, embedded):
            for path in MIGRATIONS:
                for statement in split_statements(path.read_text()):
                    engine.execute(statement)
            for statement in FIXTURES:
                engine.execute(statement)
        assert server.version().startswith("18.16"), server.version()
        assert int(embedded.version().split(".")[0]) >= 24, embedded.version()
        for name, (binds, _) in EXPECTED.items():
            sql = bind(QUERIES[name], binds) + "\nFORMAT TabSeparated"
            ordered = name in ("session_timeline", "rebuild_events")
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
