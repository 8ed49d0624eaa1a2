"""The Grafana dashboards in deploy/grafana/dashboards and how their SQL is run: loading the
dashboards, finding a panel's query, giving a dashboard's variables a scenario's selection (a
query variable's options are what its query returns), and running a statement on ClickHouse
18.16 or chDB with its rows converted to Python values.
"""

import datetime as dt
import json
import re
import urllib.error

from dashboard_workload import FROM, TO
from grafana_sql import Variable, expand, panel_queries
from test_cross_engine import ROOT

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARDS = {
    json.loads(p.read_text())["uid"]: json.loads(p.read_text())
    for p in sorted((GRAFANA / "dashboards").glob("*.json"))
}
PANELS = [(uid, panel["id"]) for uid, d in DASHBOARDS.items() for panel, _ in panel_queries(d)]


def panel_sql(uid, panel_id):
    [(panel, target)] = [(p, t) for p, t in panel_queries(DASHBOARDS[uid]) if p["id"] == panel_id]
    return panel, target


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
