"""Every panel of every Grafana dashboard in deploy/grafana/dashboards, with its macros and
variables expanded as Grafana and the ClickHouse plugin expand them (grafana_sql.py), runs on
ClickHouse 18.16 (the local server) and on current ClickHouse (chDB) over a seeded workload
(dashboard_workload.py), and returns the columns and rows dashboard_expectations.py computes
from the same workload.

Exact aggregates (counts, tokens, nano-USD sums and what is divided from them) must match
exactly (floats to 1e-12 relative). Percentiles come from the latency histograms: they must
equal the bucket bound Python reads from the same histograms, and lie between the true
nearest-rank percentile of the raw latencies and 15.5 % above it.
"""

import math
import re
import zoneinfo

import pytest
import yaml
from dashboard_expectations import (
    EXPECTED,
    SCENARIOS,
    current_quota,
    expected_variable,
    group,
    percentiles,
    step,
    usage_rows,
)
from dashboard_queries import DASHBOARDS, GRAFANA, PANELS, panel_sql, run, variables_for
from dashboard_workload import ALERTS, BOUNDS, FINAL_USAGE, FROM, STALE_USAGE, TO, fixture_statements
from grafana_sql import ALL, Variable, expand, panel_queries
from test_cross_engine import MIGRATIONS, Chdb, Server, split_statements


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
