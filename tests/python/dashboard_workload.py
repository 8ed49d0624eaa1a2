"""The seeded workload the dashboard tests load into both engines: the dashboard time range,
the latency histogram buckets (schema::rollups::LATENCY_BOUNDS_MS), the usage_hourly,
usage_daily, quota_status and quota_alerts rows drawn from a fixed seed, and the INSERT
statements that write them.
"""

import bisect
import collections
import datetime as dt
import math
import random
import re

from test_cross_engine import ROOT, literal


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
