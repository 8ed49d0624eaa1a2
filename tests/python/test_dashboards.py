"""Every panel of every Grafana dashboard in deploy/grafana/dashboards, with its macros and
variables expanded as Grafana and the ClickHouse plugin expand them (grafana_sql.py), runs on
ClickHouse 18.16 (the local server) and on current ClickHouse (chDB) over a seeded workload,
and returns the columns and rows this file computes from the same workload.

Exact aggregates (counts, tokens, nano-USD sums and what is divided from them) must match
exactly (floats to 1e-12 relative). Percentiles come from the latency histograms: they must
equal the bucket bound Python reads from the same histograms, and lie between the true
nearest-rank percentile of the raw latencies and 15.5 % above it.
"""

import bisect
import collections
import datetime as dt
import json
import math
import pathlib
import random
import re
import urllib.error
import zoneinfo

import pytest
import yaml
from grafana_sql import ALL, Variable, expand, panel_queries
from test_cross_engine import MIGRATIONS, ROOT, Chdb, Server, literal, split_statements

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = {
    json.loads(p.read_text())["uid"]: json.loads(p.read_text())
    for p in sorted((GRAFANA / "dashboards").glob("*.json"))
}


def utc(text):
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp())


# The dashboard time range of every test: 36 hours, starting and ending on an hour, so hourly
# buckets at both ends are inside ($__timeFilter is inclusive on both sides).
FROM, TO = utc("2026-11-20T06:00:00"), utc("2026-11-21T18:00:00")


def latency_bounds():
    """schema::rollups::LATENCY_BOUNDS_MS, computed as the Rust code does from its STEPS."""
    source = (ROOT / "schema" / "src" / "rollups.rs").read_text()
    steps = re.search(r"const STEPS: \[u64; 16\] = \[([^\]]*)\]", source).group(1)
    steps = [int(s.replace("_", "")) for s in steps.split(",") if s.strip()]
    count = int(re.search(r"pub const LATENCY_BOUNDS_MS: \[u64; (\d+)\]", source).group(1))
    return [(steps[i % 16] * 10 ** (i // 16) + 500_000) // 1_000_000 for i in range(count)]


BOUNDS = latency_bounds()


def histogram(values):
    if not values:
        return []
    hist = [0] * (len(BOUNDS) + 1)
    for v in values:
        hist[bisect.bisect_left(BOUNDS, v)] += 1
    return hist


def hist_quantile(hist, q):
    """The bucket bound at quantile q, as the dashboards read it (inf for the overflow)."""
    rank = math.ceil(q * sum(hist))
    seen = 0
    for i, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return float(BOUNDS[i]) if i < len(BOUNDS) else math.inf
    raise AssertionError("empty histogram")


def add_hists(hists):
    out = []
    for h in hists:
        if len(h) > len(out):
            out += [0] * (len(h) - len(out))
        for i, c in enumerate(h):
            out[i] += c
    return out


# ----------------------------------------------------------------------------- workload

ACCOUNTS = [f"acct-{i}" for i in range(1, 6)]
MODELS = ["claude-sonnet-4", "gemini-2.0-flash", "gpt-4o"]
OPERATIONS = ["chat", "email_draft"]
STREAMING = {"claude-sonnet-4", "gpt-4o"}  # models whose responses carry a time to first token

Usage = collections.namedtuple(
    "Usage",
    "project bucket account model operation partition events requests responses errors input output "
    "cache_read cache_write cost durations ttfts offset",
)


def usage_workload(rng):
    """(final rows, superseded rows): per project × hour × account × model × operation ×
    partition the row the aggregator wrote last, and earlier versions of some of them."""
    final, stale = [], []
    combos = [(a, m, o) for a in ACCOUNTS for m in MODELS for o in OPERATIONS]
    for project in ("p-main", "p-other"):
        for hour in range(utc("2026-11-19T20:00:00"), utc("2026-11-22T03:00:00"), 3600):
            for account, model, operation in rng.sample(combos, rng.randint(3, 7)):
                for partition in rng.sample([0, 1, 2], rng.randint(1, 2)):
                    requests = rng.randint(1, 12)
                    responses = requests - rng.randint(0, min(2, requests))
                    durations = [int(rng.lognormvariate(6.4, 0.9)) + 20 for _ in range(responses)]
                    ttfts = [int(d * rng.uniform(0.05, 0.4)) + 20 for d in durations] if model in STREAMING else []
                    input_tokens = sum(rng.randint(200, 4000) for _ in range(responses))
                    cache_read = rng.randint(0, input_tokens // 2)
                    row = Usage(
                        project, hour, account, model, operation, partition,
                        events=requests + responses + rng.randint(0, 6),
                        requests=requests, responses=responses, errors=rng.choice([0, 0, 0, 1, 2]),
                        input=input_tokens, output=sum(rng.randint(50, 800) for _ in range(responses)),
                        cache_read=cache_read, cache_write=rng.randint(0, (input_tokens - cache_read) // 4),
                        cost=rng.randint(10**5, 5 * 10**9), durations=durations, ttfts=ttfts,
                        offset=rng.randint(1000, 10**6),
                    )
                    final.append(row)
                    if rng.random() < 0.3:
                        # An earlier fold of the same row: fewer events, a lower offset.
                        stale.append(row._replace(
                            requests=max(1, requests // 2), errors=row.errors + 3, cost=row.cost // 3,
                            input=input_tokens // 2, durations=durations[: len(durations) // 2] or [5000],
                            offset=row.offset - rng.randint(1, 999),
                        ))
    return final, stale


USAGE_COLUMNS = (
    "project_id, bucket, account_id, model, operation, kafka_partition, events, llm_requests, llm_responses, "
    "errors, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_nanos, "
    "provided_cost_nanos, unpriced_events, duration_count, duration_sum_ms, duration_hist, ttft_count, "
    "ttft_sum_ms, ttft_hist, kafka_offset"
)


def usage_values(r):
    values = [
        r.project, r.bucket, r.account, r.model, r.operation, r.partition, r.events, r.requests, r.responses,
        r.errors, r.input, r.output, r.cache_read, r.cache_write, r.cost, 0, 0, len(r.durations),
        sum(r.durations), histogram(r.durations), len(r.ttfts), sum(r.ttfts), histogram(r.ttfts), r.offset,
    ]
    return "(" + ",".join(literal(v) for v in values) + ")"


def usage_inserts(table, rows):
    for i in range(0, len(rows), 400):
        chunk = rows[i:i + 400]
        yield f"INSERT INTO {table} ({USAGE_COLUMNS}) VALUES " + ",".join(usage_values(r) for r in chunk)


def daily(rows):
    """usage_daily rows folded from the hourly ones (the variable queries read them)."""
    days = collections.defaultdict(list)
    for r in rows:
        key = (r.project, r.bucket - r.bucket % 86400, r.account, r.model, r.operation, r.partition)
        days[key].append(r)
    out = []
    for (project, day, account, model, operation, partition), rs in sorted(days.items()):
        out.append(Usage(
            project, day, account, model, operation, partition,
            *[sum(getattr(r, f) for r in rs) for f in
              ("events", "requests", "responses", "errors", "input", "output", "cache_read", "cache_write", "cost")],
            durations=[d for r in rs for d in r.durations], ttfts=[t for r in rs for t in r.ttfts],
            offset=max(r.offset for r in rs),
        ))
    return out


Status = collections.namedtuple(
    "Status", "project account plan limit window window_start limit_value used status updated_at version"
)
Alert = collections.namedtuple(
    "Alert", "alert_id project account plan limit window window_start threshold threshold_percent "
    "limit_value used emitted_at"
)
THRESHOLDS = [("warning", 75), ("critical", 90), ("exceeded", 100)]
LIMITS = [("daily_tokens", "day", 1_000_000), ("monthly_cost", "month", 50 * 10**9),
          ("requests_per_minute", "minute", 60)]
WINDOW_SECONDS = {"day": 86400, "month": 30 * 86400, "minute": 60}


def status_of(used, limit):
    percent = 100 * used / limit
    return "exceeded" if percent >= 100 else "critical" if percent >= 90 else "warning" if percent >= 75 else "ok"


def quota_workload(rng):
    """quota_status versions (several per window) and quota_alerts, replays included."""
    statuses, alerts = [], []
    windows = {
        "day": [utc(f"2026-11-{d}T00:00:00") for d in (19, 20, 21, 22)],
        "month": [utc("2026-10-01T00:00:00"), utc("2026-11-01T00:00:00")],
        "minute": [utc("2026-11-20T05:59:00"), utc("2026-11-21T12:30:00"), utc("2026-11-21T17:59:00")],
    }
    version = 1
    for project in ("p-main", "p-other"):
        for account in [f"acct-{i}" for i in range(1, 12)]:
            plan = rng.choice(["free", "pro"])
            for limit, window, limit_value in LIMITS:
                for start in rng.sample(windows[window], rng.randint(1, len(windows[window]))):
                    used = 0
                    updated = start
                    for _ in range(rng.randint(1, 3)):
                        used += rng.randint(0, int(limit_value * 0.6))
                        updated = min(updated + rng.randint(1, WINDOW_SECONDS[window]), start + WINDOW_SECONDS[window] - 1)
                        version += rng.randint(1, 50)
                        statuses.append(Status(project, account, plan, limit, window, start, limit_value, used,
                                               status_of(used, limit_value), updated, version))
                    percent = 100 * used / limit_value
                    for threshold, tp in THRESHOLDS:
                        if percent >= tp:
                            alert = Alert(f"{project}/{account}/{limit}/{start}/{threshold}", project, account, plan,
                                          limit, window, start, threshold, tp, limit_value, used,
                                          rng.randint(start, updated))
                            alerts.append(alert)
                            if rng.random() < 0.3:
                                alerts.append(alert)  # the same record written again after a replay
    # One window at each status for certain, whatever the draws above.
    for i, used in enumerate([100_000, 800_000, 950_000, 1_200_000]):
        for v, share in ((1, 2), (2, 1)):
            statuses.append(Status("p-main", f"acct-{12 + i}", "pro", "daily_tokens", "day", utc("2026-11-21T00:00:00"),
                                   1_000_000, used // share, status_of(used // share, 1_000_000),
                                   utc("2026-11-21T10:00:00") + v, version + 10 * i + v))
    rng.shuffle(statuses)  # versions arrive in any order; the highest wins
    return statuses, alerts


def row_insert(table, columns, rows):
    body = ",".join("(" + ",".join(literal(v) for v in r) + ")" for r in rows)
    return f"INSERT INTO {table} ({columns}) VALUES {body}"


def quota_inserts(statuses, alerts):
    status_columns = ("project_id, account_id, plan, limit_name, window, window_start, limit_value, used, "
                      "status, updated_at, version")
    alert_columns = ("alert_id, project_id, account_id, plan, limit_name, window, window_start, threshold, "
                     "threshold_percent, limit_value, used, emitted_at")
    half = len(statuses) // 2
    yield row_insert("quota_status", status_columns, statuses[:half])
    yield row_insert("quota_status", status_columns, statuses[half:])
    yield row_insert("quota_alerts", alert_columns, alerts[: len(alerts) // 2])
    yield row_insert("quota_alerts", alert_columns, alerts[len(alerts) // 2:])


RNG = random.Random(6)
FINAL_USAGE, STALE_USAGE = usage_workload(RNG)
DAILY_USAGE = daily(FINAL_USAGE)
STATUSES, ALERTS = quota_workload(RNG)


def fixture_statements():
    yield from usage_inserts("usage_hourly", FINAL_USAGE)
    yield from usage_inserts("usage_hourly", STALE_USAGE)  # later parts, lower offsets
    yield from usage_inserts("usage_daily", DAILY_USAGE)
    yield from quota_inserts(STATUSES, ALERTS)


# ----------------------------------------------------------------------------- scenarios

# What a user selected: project, accounts, models, and Grafana's query interval.
SCENARIOS = {
    "all-accounts-hourly": {"project": "p-main", "account": ALL, "model": ALL, "interval": 3600},
    "two-accounts-3h": {"project": "p-main", "account": ["acct-2", "acct-5"], "model": ["gpt-4o", "gemini-2.0-flash"],
                        "interval": 10800},
    "other-project-6h": {"project": "p-other", "account": ["acct-1"], "model": ["claude-sonnet-4"], "interval": 21600},
}


def selected(choice, value):
    return choice == ALL or value in choice


def usage_rows(s, with_model=False):
    return [
        r for r in FINAL_USAGE
        if r.project == s["project"] and selected(s["account"], r.account) and FROM <= r.bucket <= TO
        and (not with_model or selected(s["model"], r.model))
    ]


def step(ts, s):
    return ts - ts % s["interval"]


def group(rows, key):
    out = collections.defaultdict(list)
    for r in rows:
        out[key(r)].append(r)
    return sorted(out.items())


def total(rows, field):
    return sum(getattr(r, field) for r in rows)


def percentiles(rows, field, qs):
    hist = add_hists([histogram(getattr(r, field)) for r in rows])
    if not sum(hist):
        return [math.nan] * len(qs)
    return [hist_quantile(hist, q) for q in qs]


# ----------------------------------------------------------------------------- expectations
# For each panel (dashboard uid, panel id): its columns and a function of the scenario giving
# its rows.

def overview_totals(s):
    rows = usage_rows(s)
    requests, errors = total(rows, "requests"), total(rows, "errors")
    return [(requests, total(rows, "input") + total(rows, "output"), total(rows, "cost") / 1e9, errors,
             errors / requests if requests else 0)]


def overview_tokens(s):
    return [(t, total(rs, "input"), total(rs, "output"), total(rs, "cache_read"), total(rs, "cache_write"))
            for t, rs in group(usage_rows(s), lambda r: step(r.bucket, s))]


def overview_cost(s):
    return [(t, m, total(rs, "cost") / 1e9) for (t, m), rs in group(usage_rows(s), lambda r: (step(r.bucket, s), r.model))]


def overview_requests(s):
    return [(t, total(rs, "requests"), total(rs, "errors")) for t, rs in group(usage_rows(s), lambda r: step(r.bucket, s))]


def overview_accounts(s):
    out = [(a, total(rs, "requests"), total(rs, "input") + total(rs, "output"), total(rs, "cost"), total(rs, "errors"))
           for a, rs in group(usage_rows(s), lambda r: r.account)]
    out.sort(key=lambda x: (-x[3], x[0]))
    return [(a, req, tok, cost / 1e9, err) for a, req, tok, cost, err in out[:10]]


def avg(values_lists):
    count = sum(len(v) for v in values_lists)
    return sum(sum(v) for v in values_lists) / count if count else math.nan


def overview_models(s):
    out = [(m, total(rs, "requests"), total(rs, "input") + total(rs, "output"), total(rs, "cost"),
            avg([r.durations for r in rs]))
           for m, rs in group(usage_rows(s), lambda r: r.model)]
    out.sort(key=lambda x: (-x[3], x[0]))
    return [(m, req, tok, cost / 1e9, a) for m, req, tok, cost, a in out[:10]]


def latency_series(field):
    def rows(s):
        out = []
        for (t, m), rs in group(usage_rows(s, with_model=True), lambda r: (step(r.bucket, s), r.model)):
            if sum(len(getattr(r, field)) for r in rs):
                out.append((t, m, *percentiles(rs, field, [0.5, 0.9, 0.99])))
        return out
    return rows


def latency_average(s):
    return [(t, m, avg([r.durations for r in rs]))
            for (t, m), rs in group(usage_rows(s, with_model=True), lambda r: (step(r.bucket, s), r.model))
            if sum(len(r.durations) for r in rs)]


def latency_table(s):
    out = []
    for m, rs in group(usage_rows(s, with_model=True), lambda r: r.model):
        responses = sum(len(r.durations) for r in rs)
        if not responses:
            continue
        ttft_count = sum(len(r.ttfts) for r in rs)
        ttft = [avg([r.ttfts for r in rs]), *percentiles(rs, "ttfts", [0.5, 0.95])] if ttft_count else [math.nan] * 3
        out.append((m, responses, avg([r.durations for r in rs]),
                    *percentiles(rs, "durations", [0.5, 0.75, 0.9, 0.95, 0.99]), *ttft))
    return out


def current_quota(s):
    """Per account and limit: the latest window starting by the range end whose latest version
    was updated at or after the range start."""
    latest = {}
    for r in STATUSES:
        key = (r.project, r.account, r.limit, r.window_start)
        if key not in latest or r.version > latest[key].version:
            latest[key] = r
    chosen = {}
    for r in latest.values():
        if r.project != s["project"] or not selected(s["account"], r.account):
            continue
        if r.window_start > TO or r.updated_at < FROM:
            continue
        key = (r.account, r.limit)
        if key not in chosen or r.window_start > chosen[key].window_start:
            chosen[key] = r
    return list(chosen.values())


SEVERITY = {"ok": 1, "warning": 2, "critical": 3, "exceeded": 4}


def percent(r):
    return 100 * r.used / r.limit_value if r.limit_value else 0


def shown(r, value):
    return value / 1e9 if "cost" in r.limit.lower() else float(value)


def quota_counts(s):
    worst = collections.defaultdict(int)
    for r in current_quota(s):
        worst[r.account] = max(worst[r.account], SEVERITY[r.status])
    return [tuple(sum(1 for w in worst.values() if w == level) for level in (4, 3, 2, 1))]


def quota_near(s):
    rows = [r for r in current_quota(s) if r.status != "ok"]
    rows.sort(key=lambda r: (-percent(r), r.account, r.limit))
    return [(r.account, r.limit, r.window, r.window_start, shown(r, r.used), shown(r, r.limit_value), percent(r), r.status)
            for r in rows]


def quota_top(s):
    best = collections.defaultdict(float)
    for r in current_quota(s):
        best[r.account] = max(best[r.account], percent(r))
    return sorted(best.items(), key=lambda x: (-x[1], x[0]))[:20]


def alerts_in_range(s):
    unique = {(a.project, a.account, a.limit, a.window_start, a.threshold): a for a in ALERTS}
    return [a for a in unique.values()
            if a.project == s["project"] and selected(s["account"], a.account) and a.window_start <= TO
            and FROM <= a.emitted_at <= TO]


def quota_alert_series(s):
    return [(t, th, len(rs)) for (t, th), rs in group(alerts_in_range(s), lambda a: (step(a.emitted_at, s), a.threshold))]


def quota_recent(s):
    rows = sorted(alerts_in_range(s), key=lambda a: (-a.emitted_at, a.account, a.limit, a.window_start, -a.threshold_percent))
    return [(a.emitted_at, a.account, a.limit, a.window, a.window_start, a.threshold, a.threshold_percent,
             shown(a, a.used), shown(a, a.limit_value)) for a in rows[:100]]


EXPECTED = {
    ("tally-overview", 1): (["requests_total", "tokens_total", "cost_usd", "error_events", "error_rate"], overview_totals),
    ("tally-overview", 2): (["time", "input", "output", "cache_read", "cache_write"], overview_tokens),
    ("tally-overview", 3): (["time", "model", "cost_usd"], overview_cost),
    ("tally-overview", 4): (["time", "requests", "error_events"], overview_requests),
    ("tally-overview", 5): (["account_id", "requests", "tokens", "cost_usd", "error_events"], overview_accounts),
    ("tally-overview", 6): (["model", "requests", "tokens", "cost_usd", "avg_latency_ms"], overview_models),
    ("tally-latency", 1): (["time", "model", "p50_ms", "p90_ms", "p99_ms"], latency_series("durations")),
    ("tally-latency", 2): (["time", "model", "p50_ms", "p90_ms", "p99_ms"], latency_series("ttfts")),
    ("tally-latency", 3): (["time", "model", "avg_ms"], latency_average),
    ("tally-latency", 4): (["model", "responses", "avg_ms", "p50_ms", "p75_ms", "p90_ms", "p95_ms", "p99_ms",
                            "ttft_avg_ms", "ttft_p50_ms", "ttft_p95_ms"], latency_table),
    ("tally-quotas", 1): (["exceeded", "critical", "warning", "ok"], quota_counts),
    ("tally-quotas", 2): (["account_id", "limit_name", "window", "window_start", "used", "quota_limit", "percent",
                           "status"], quota_near),
    ("tally-quotas", 3): (["account_id", "percent"], quota_top),
    ("tally-quotas", 4): (["time", "threshold", "alerts"], quota_alert_series),
    ("tally-quotas", 5): (["emitted_at", "account_id", "limit_name", "window", "window_start", "threshold",
                           "threshold_percent", "used_at_alert", "quota_limit"], quota_recent),
}


def expected_variable(uid, name, s):
    """What each variable query offers."""
    quota = uid == "tally-quotas"
    if name == "project":
        return sorted({r.project for r in (STATUSES if quota else DAILY_USAGE)})
    if quota and name == "account":
        return sorted({r.account for r in STATUSES if r.project == s["project"]})
    start_of_day = FROM - FROM % 86400
    days = [r for r in DAILY_USAGE if r.project == s["project"] and start_of_day <= r.bucket <= TO]
    if name == "account":
        return sorted({r.account for r in days})
    if name == "model":
        return sorted({r.model for r in days if r.model})
    raise AssertionError(f"no expectation for variable {name}")


# ----------------------------------------------------------------------------- engines

def run(engine, sql):
    """Rows of a statement as Python values, and its column names."""
    try:
        out = engine.execute(sql + "\nFORMAT TabSeparatedWithNamesAndTypes")
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{engine.name}: {error.read().decode()}\n{sql}") from None
    lines = out.split("\n")
    names, types = lines[0].split("\t"), lines[1].split("\t")
    rows = [tuple(convert(v, t, engine.tz) for v, t in zip(line.split("\t"), types)) for line in lines[2:] if line]
    return names, rows


def unescape(value):
    return re.sub(r"\\(.)", lambda m: {"t": "\t", "n": "\n", "0": "\0"}.get(m.group(1), m.group(1)), value)


def convert(value, kind, tz):
    kind = re.sub(r"^(Nullable|LowCardinality)\((.*)\)$", r"\2", kind)
    if value == "\\N":
        return None
    if re.fullmatch(r"U?Int\d+", kind):
        return int(value)
    if kind.startswith("Float"):
        return float(value)
    if kind.startswith("DateTime"):
        return int(dt.datetime.fromisoformat(value).replace(tzinfo=tz).timestamp())
    return unescape(value)


@pytest.fixture(params=[Server, Chdb], ids=["clickhouse-18.16", "chdb"], scope="module")
def engine(request):
    engine = request.param()
    try:
        for path in MIGRATIONS:
            for statement in split_statements(path.read_text()):
                engine.execute(statement)
        for statement in fixture_statements():
            engine.execute(statement)
        engine.tz = zoneinfo.ZoneInfo(engine.execute("SELECT timezone()").strip())
        yield engine
    finally:
        engine.close()


def variables_for(uid, s, engine=None):
    """The dashboard's variables with the scenario's selection; query variables' options are
    what their query returns (when an engine is given)."""
    out = {}
    for v in DASHBOARDS[uid]["templating"]["list"]:
        name = v["name"]
        if v["type"] == "constant":
            out[name] = Variable(name, v["query"])
        elif v["type"] == "query":
            out[name] = Variable(name, s[name], all_value=v.get("allValue") or None)
        else:
            raise AssertionError(f"variable type {v['type']} is not modelled")
    if engine is not None:
        for v in DASHBOARDS[uid]["templating"]["list"]:
            if v["type"] == "query":
                sql = expand(v["query"], out, FROM, TO, s["interval"])
                out[v["name"]].options = [row[0] for row in run(engine, sql)[1]]
    return out


def same(actual, expected):
    if isinstance(expected, float):
        if math.isnan(expected):
            return isinstance(actual, float) and math.isnan(actual)
        return isinstance(actual, (int, float)) and math.isclose(actual, expected, rel_tol=1e-12, abs_tol=1e-12)
    return actual == expected


def assert_rows(actual, expected):
    assert len(actual) == len(expected), f"{len(actual)} rows, expected {len(expected)}:\n{actual[:5]}\n{expected[:5]}"
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert len(a) == len(e) and all(same(x, y) for x, y in zip(a, e)), f"row {i}: {a} != {e}"


PANELS = [(uid, panel["id"]) for uid, d in DASHBOARDS.items() for panel, _ in panel_queries(d)]


def panel_sql(uid, panel_id):
    [(panel, target)] = [(p, t) for p, t in panel_queries(DASHBOARDS[uid]) if p["id"] == panel_id]
    return panel, target


# ----------------------------------------------------------------------------- tests

def test_every_panel_has_an_expectation():
    assert sorted(PANELS) == sorted(EXPECTED)
    assert set(DASHBOARDS) == {"tally-overview", "tally-latency", "tally-quotas"}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("uid,panel_id", sorted(EXPECTED))
def test_panel_returns_the_expected_rows(engine, uid, panel_id, scenario):
    s = SCENARIOS[scenario]
    panel, target = panel_sql(uid, panel_id)
    sql = expand(target["rawSql"], variables_for(uid, s, engine), FROM, TO, s["interval"])
    columns, expect = EXPECTED[(uid, panel_id)]
    names, rows = run(engine, sql)
    assert names == columns
    assert_rows(rows, expect(s))


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@pytest.mark.parametrize("uid", sorted(DASHBOARDS))
def test_variable_queries(engine, uid, scenario):
    s = SCENARIOS[scenario]
    variables = variables_for(uid, s)
    for v in DASHBOARDS[uid]["templating"]["list"]:
        if v["type"] != "query":
            continue
        rows = run(engine, expand(v["query"], variables, FROM, TO, s["interval"]))[1]
        assert [r[0] for r in rows] == expected_variable(uid, v["name"], s), v["name"]


def test_the_workload_is_not_trivial():
    """Every expectation has rows in the main scenario, FINAL matters, ranges cut data."""
    s = SCENARIOS["all-accounts-hourly"]
    for key, (_, expect) in EXPECTED.items():
        assert expect(s), key
    assert STALE_USAGE and any(r.bucket < FROM for r in FINAL_USAGE) and any(r.bucket > TO for r in FINAL_USAGE)
    statuses = {r.status for r in current_quota(s)}
    assert statuses == {"ok", "warning", "critical", "exceeded"}, statuses
    assert len(ALERTS) > len({a.alert_id for a in ALERTS}), "some alerts are replayed"


@pytest.mark.parametrize("field", ["durations", "ttfts"])
def test_percentiles_are_within_the_stated_tolerance_of_the_raw_latencies(field):
    """A histogram percentile is never below the true (nearest-rank) one, at most 15.5 % above."""
    s = SCENARIOS["all-accounts-hourly"]
    checked = 0
    for _, rs in group(usage_rows(s), lambda r: (step(r.bucket, s), r.model)):
        values = sorted(v for r in rs for v in getattr(r, field))
        if not values:
            continue
        for q, got in zip([0.5, 0.9, 0.99], percentiles(rs, field, [0.5, 0.9, 0.99])):
            true = values[max(1, math.ceil(q * len(values))) - 1]
            assert true <= got <= true * 1.155, (q, true, got)
            checked += 1
    assert checked > 100


def test_latency_bounds_constant_is_the_schema_s():
    [constant] = [v for v in DASHBOARDS["tally-latency"]["templating"]["list"] if v["name"] == "latency_bounds_ms"]
    values = constant["query"].strip("[]").split(",")
    assert [int(v) for v in values[:-1]] == BOUNDS and values[-1] == "inf"
    assert BOUNDS[0] == 1 and BOUNDS[16] == 10 and BOUNDS[-1] == 1_000_000


def interval_seconds(text):
    number, unit = re.fullmatch(r"(\d+)([smhd])", text).groups()
    return int(number) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def test_dashboards_are_well_formed():
    datasource = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "tally.yaml").read_text())
    [source] = datasource["datasources"]
    assert source["type"] == "grafana-clickhouse-datasource"
    assert source["jsonData"]["defaultDatabase"] == "tally"
    ids = set()
    for uid, d in DASHBOARDS.items():
        names = [v["name"] for v in d["templating"]["list"]]
        assert {"project", "account"} <= set(names), uid
        for panel, target in panel_queries(d):
            assert (uid, panel["id"]) not in ids
            ids.add((uid, panel["id"]))
            for ref in (panel["datasource"], target["datasource"]):
                assert ref == {"type": source["type"], "uid": source["uid"]}, (uid, panel["title"])
            assert target["editorType"] == "sql" and target["rawSql"].strip()
            assert target["format"] == (0 if target["queryType"] == "timeSeries" else 1), panel["title"]
            assert (panel["type"] == "timeseries") == (target["queryType"] == "timeSeries"), panel["title"]
            if panel["type"] == "timeseries":
                # The query interval is at least the panel's minimum, which every scenario honours.
                assert all(sc["interval"] >= interval_seconds(panel["interval"]) for sc in SCENARIOS.values())
                if "usage_hourly" in target["rawSql"]:
                    assert interval_seconds(panel["interval"]) % 3600 == 0, panel["title"]


# ------------------------------------------------------------------ the expander itself

def test_expander_follows_the_plugin():
    variables = {
        "project": Variable("project", "p-main"),
        "account": Variable("account", ["a", "b"]),
        "model": Variable("model", ALL, options=["m1", "m2"]),
    }
    sql = expand(
        "SELECT $__timeInterval(ts) t FROM x WHERE $__timeFilter(ts) AND p = '${project}' "
        "AND $__conditionalAll(a IN (${account}), $account) AND $__conditionalAll(m IN ($model), $model) "
        "AND d >= $__fromTime AND d <= $__toTime AND s = $__interval_s AND $__dateFilter(day)",
        variables, 1_763_800_000, 1_763_803_600, 30.7,
    )
    assert sql == (
        "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 30 second) t FROM x "
        "WHERE ts >= toDateTime(1763800000) AND ts <= toDateTime(1763803600) AND p = 'p-main' "
        "AND a IN ('a','b') AND 1=1 AND d >= toDateTime(1763800000) AND d <= toDateTime(1763803600) "
        "AND s = 30 AND day >= toDate('2025-11-22') AND day <= toDate('2025-11-22')"
    )
    # "All" outside $__conditionalAll is every option; a custom all value is used as it is.
    assert expand("m IN ($model)", variables, 0, 1, 1) == "m IN ('m1','m2')"
    custom = {"model": Variable("model", ALL, options=["m1"], all_value="'*'")}
    assert expand("m = $model", custom, 0, 1, 1) == "m = '*'"
    # Arguments are split on top-level commas only; a nested call stays one argument.
    assert expand("$__timeFilter(toDateTime(a, 'UTC'))", {}, 5, 6, 1) == (
        "toDateTime(a, 'UTC') >= toDateTime(5) AND toDateTime(a, 'UTC') <= toDateTime(6)"
    )
    for unknown in ("$__interval", "${account:csv}", "$nope", "$__timeFilter(a, b)"):
        with pytest.raises(ValueError):
            expand(unknown, variables, 0, 1, 1)
