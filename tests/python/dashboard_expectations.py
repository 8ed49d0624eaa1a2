"""What every dashboard panel and variable query must return, computed in Python from the seeded
workload (dashboard_workload.py): the scenarios (what a user selected), and per panel its
column names and a function of the scenario giving its rows.

Aggregates are summed from the raw rows; percentiles are the bucket bounds read from the same
latency histograms the dashboards read.
"""

import collections
import math

from dashboard_workload import (
    ALERTS,
    DAILY_USAGE,
    FINAL_USAGE,
    FROM,
    STATUSES,
    TO,
    add_hists,
    hist_quantile,
    histogram,
)
from grafana_sql import ALL


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
