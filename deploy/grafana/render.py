"""Draws each dashboard of deploy/grafana/dashboards to a PNG, from real query results.

Every panel's SQL is expanded exactly as in tests/python/test_dashboards.py (the plugin's
macros and Grafana's variables) and run on the ClickHouse server over HTTP, in a private
database seeded with that test's workload; the answers go into a static HTML page that lays
the panels out on Grafana's 24-column grid and draws them (stats, time series, tables, bar
gauges), and headless Chromium takes the screenshot. It is a faithful sketch of the
dashboard, not Grafana itself: same queries, same numbers, simpler drawing.

    .tally/venv/bin/python deploy/grafana/render.py    # needs Debian's chromium
"""

import json
import pathlib
import subprocess
import sys
import tempfile

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))

import test_dashboards as td  # noqa: E402  (the seeded workload and the expander's inputs)
from grafana_sql import expand, panel_queries  # noqa: E402
from test_cross_engine import MIGRATIONS, Server, split_statements  # noqa: E402

SCENARIO = td.SCENARIOS["all-accounts-hourly"]
GRID_COL, GRID_ROW = 64, 34  # pixels of one grid column and one grid row

PAGE = r"""<!doctype html><html><head><meta charset="utf-8"><style>
body{margin:0;background:#111217;color:#ccccdc;font:13px Inter,Helvetica,Arial,sans-serif}
header{height:44px;display:flex;align-items:center;padding:0 12px;gap:14px;border-bottom:1px solid #2c3235}
header b{font-size:17px;color:#fff} .var{background:#181b1f;border:1px solid #2c3235;padding:3px 8px;border-radius:2px}
.grid{position:relative;margin:8px}
.panel{position:absolute;box-sizing:border-box;background:#181b1f;border:1px solid #2c3235;border-radius:2px;overflow:hidden}
.title{height:28px;line-height:28px;padding:0 8px;font-weight:500;color:#fff;white-space:nowrap;overflow:hidden}
.body{position:absolute;top:28px;left:0;right:0;bottom:0;padding:4px 8px}
.stats{display:flex;height:100%;gap:6px}.stat{flex:1;display:flex;flex-direction:column;justify-content:center;align-items:center;border-radius:2px}
.stat .v{font-size:30px;font-weight:500;color:#fff}.stat .n{opacity:.8}
table{border-collapse:collapse;width:100%;font-size:12px}th{text-align:left;color:#6e9fff;font-weight:500;border-bottom:1px solid #2c3235;padding:3px 6px}
td{padding:3px 6px;border-bottom:1px solid #202226;white-space:nowrap}
.legend{font-size:11px;display:flex;flex-wrap:wrap;gap:2px 12px}.sw{display:inline-block;width:12px;height:3px;margin-right:4px;vertical-align:middle}
.bar{height:18px;margin:5px 0;display:flex;align-items:center;gap:8px}.bar .l{width:80px}.bar .t{flex:1;background:#22252b;height:100%}
</style></head><body><header><b>TITLE</b>VARS<span style="margin-left:auto">RANGE</span></header><div class="grid" id="g"></div>
<script>
const DATA = DATA_JSON, COL = GRID_COL, ROW = GRID_ROW;
const PALETTE = ["#73bf69","#f2cc0c","#8ab8ff","#ff780a","#f2495c","#5794f2","#b877d9","#fade2a","#96d98d","#ffb357"];
const STATUS = {exceeded:"#f2495c", critical:"#ff780a", warning:"#f2cc0c", ok:"#73bf69"};
function fmt(v, unit){
  if (v === null || v === undefined) return "-";
  if (typeof v === "string") return v;
  if (!isFinite(v)) return isNaN(v) ? "NaN" : "∞";
  if (unit === "currencyUSD") return "$" + (Math.abs(v) >= 1000 ? short(v) : v.toFixed(2));
  if (unit === "percentunit") return (100*v).toFixed(1) + "%";
  if (unit === "percent") return v.toFixed(1) + "%";
  if (unit === "ms") return v >= 1000 ? (v/1000).toFixed(2) + " s" : v.toFixed(v < 10 ? 1 : 0) + " ms";
  if (unit === "time") return new Date(v*1000).toISOString().slice(5,16).replace("T"," ");
  return short(v);
}
function short(v){ const a=Math.abs(v); if(a>=1e9) return (v/1e9).toFixed(2)+"B"; if(a>=1e6) return (v/1e6).toFixed(2)+"M";
  if(a>=1e3) return (v/1e3).toFixed(1)+"K"; return Number.isInteger(v)? String(v) : v.toFixed(2); }
function unitOf(p, col){ const u = p.overrides[col];
  if ((u && u.startsWith("dateTime")) || ["time","emitted_at","window_start"].includes(col)) return "time";
  return u || p.unit; }
function el(tag, attrs, html){ const e=document.createElement(tag); Object.assign(e, attrs||{}); if(html!==undefined) e.innerHTML=html; return e; }
function stat(p, body){
  const row = p.rows[0] || [], box = el("div",{className:"stats"});
  p.columns.forEach((c,i)=>{ const s=el("div",{className:"stat"}); const color = STATUS[c] || PALETTE[i % PALETTE.length];
    s.style.background = p.colorBackground ? color + "cc" : "transparent";
    s.innerHTML = `<div class="v" style="color:${p.colorBackground?"#fff":color}">${fmt(row[i], unitOf(p,c))}</div><div class="n">${c}</div>`; box.append(s); });
  body.append(box);
}
function table(p, body){
  const t = el("table"); t.append(el("tr",{}, p.columns.map(c=>`<th>${c}</th>`).join("")));
  p.rows.slice(0, 60).forEach(r=>t.append(el("tr",{}, r.map((v,i)=>{ const c=p.columns[i];
    const color = c === "status" ? ` style="color:${STATUS[v]||"inherit"}"` : "";
    return `<td${color}>${fmt(v, unitOf(p,c))}</td>`; }).join(""))));
  body.append(t);
}
function bargauge(p, body){
  const max = Math.max(100, ...p.rows.map(r=>r[1]));
  p.rows.slice(0, 12).forEach(r=>{ const pct = r[1]/max*100; const color = r[1]>=100?STATUS.exceeded:r[1]>=90?STATUS.critical:r[1]>=75?STATUS.warning:STATUS.ok;
    body.append(el("div",{className:"bar"},`<span class="l">${r[0]}</span><span class="t"><span style="display:block;height:100%;width:${pct}%;background:linear-gradient(90deg,#73bf6944,${color})"></span></span><span>${fmt(r[1],"percent")}</span>`)); });
}
function timeseries(p, body, w, h){
  // Long to wide, as the plugin does: one series per value column and label value.
  const label = p.columns.findIndex((c,i)=>i>0 && p.rows.length && typeof p.rows[0][i] === "string");
  const series = new Map();
  p.rows.forEach(r=>{ p.columns.forEach((c,i)=>{ if(i===0||i===label) return;
    const name = label>0 ? (p.columns.length>3 ? `${c} ${r[label]}` : r[label]) : c;
    if(!series.has(name)) series.set(name, []); series.get(name).push([r[0], r[i]]); }); });
  const legendH = 18 * Math.ceil(series.size / Math.max(1, Math.floor(w/190)));
  const W = w-16, H = h - 8 - legendH, L = 56, B = 20;
  const xs = p.rows.map(r=>r[0]), x0 = Math.min(...xs), x1 = Math.max(...xs, x0+1);
  let ymax = 0; const bars = p.bars;
  if (bars) { const tot = {}; series.forEach(pts=>pts.forEach(([x,y])=>tot[x]=(tot[x]||0)+(isFinite(y)?y:0))); ymax = Math.max(0,...Object.values(tot)); }
  else series.forEach(pts=>pts.forEach(([x,y])=>{ if(isFinite(y)) ymax=Math.max(ymax,y); }));
  ymax = ymax || 1;
  const X = x=> L + (x-x0)/(x1-x0||1)*(W-L-10), Y = y=> (H-B) - y/ymax*(H-B-8);
  let svg = `<svg width="${W}" height="${H}">`;
  for (let k=0;k<=4;k++){ const y=ymax*k/4; svg += `<line x1="${L}" x2="${W}" y1="${Y(y)}" y2="${Y(y)}" stroke="#2c3235"/><text x="${L-6}" y="${Y(y)+4}" fill="#9fa7b3" font-size="10" text-anchor="end">${fmt(y,p.unit)}</text>`; }
  const ticks = 6; for (let k=0;k<=ticks;k++){ const x=x0+(x1-x0)*k/ticks; svg += `<text x="${X(x)}" y="${H-5}" fill="#9fa7b3" font-size="10" text-anchor="middle">${fmt(x,"time")}</text>`; }
  const step = xs.length>1 ? Math.min(...xs.slice(1).map((x,i)=>x-xs[i]).filter(d=>d>0)) : 3600;
  const bw = Math.max(2, (X(x0+step)-X(x0))*0.8), base = {};
  [...series.entries()].forEach(([name,pts],i)=>{ const color = PALETTE[i % PALETTE.length];
    if (bars) pts.forEach(([x,y])=>{ const b=base[x]||0; svg += `<rect x="${X(x)-bw/2}" y="${Y(b+y)}" width="${bw}" height="${Y(b)-Y(b+y)}" fill="${color}"/>`; base[x]=b+y; });
    else { const d = pts.filter(([,y])=>isFinite(y)).map(([x,y],k)=>`${k?"L":"M"}${X(x).toFixed(1)},${Y(y).toFixed(1)}`).join("");
      svg += `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>`; } });
  body.innerHTML = svg + "</svg>";
  const leg = el("div",{className:"legend"}); [...series.keys()].forEach((n,i)=>leg.append(el("span",{},`<i class="sw" style="background:${PALETTE[i%PALETTE.length]}"></i>${n}`)));
  body.append(leg);
}
const g = document.getElementById("g"); let bottom = 0;
DATA.panels.forEach(p=>{ const [x,y,w,h] = p.grid; const box = el("div",{className:"panel"});
  Object.assign(box.style,{left:x*COL+"px", top:y*ROW+"px", width:(w*COL-6)+"px", height:(h*ROW-6)+"px"});
  box.append(el("div",{className:"title"}, p.title)); const body = el("div",{className:"body"}); box.append(body); g.append(box);
  bottom = Math.max(bottom, (y+h)*ROW);
  ({stat, table, bargauge, timeseries})[p.type](p, body, w*COL-6, h*ROW-34); });
g.style.height = bottom + "px";
</script></body></html>"""


def panel_data(server, dashboard):
    variables = td.variables_for(dashboard["uid"], SCENARIO, server)
    panels = []
    for panel, target in panel_queries(dashboard):
        sql = expand(target["rawSql"], variables, td.FROM, td.TO, SCENARIO["interval"])
        columns, rows = td.run(server, sql)
        defaults = panel["fieldConfig"]["defaults"]
        overrides = {
            o["matcher"]["options"]: p["value"]
            for o in panel["fieldConfig"]["overrides"] for p in o["properties"] if p["id"] == "unit"
        }
        panels.append({
            "title": panel["title"], "type": panel["type"], "columns": columns,
            "rows": [[None if isinstance(v, float) and v != v else v for v in r] for r in rows],
            "grid": [panel["gridPos"][k] for k in "xywh"], "unit": defaults.get("unit", "short"),
            "overrides": overrides, "bars": defaults.get("custom", {}).get("drawStyle") == "bars",
            "colorBackground": panel.get("options", {}).get("colorMode") == "background",
        })
    return panels


def page(dashboard, panels):
    shown = {"project": SCENARIO["project"], "account": "All", "model": "All"}
    names = [v["name"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    bar = "".join(f'<span class="var">{n}: {shown[n]}</span>' for n in names)
    span = f"{td.dt.datetime.utcfromtimestamp(td.FROM):%Y-%m-%d %H:%M} to {td.dt.datetime.utcfromtimestamp(td.TO):%Y-%m-%d %H:%M} UTC"
    return (PAGE.replace("TITLE", dashboard["title"]).replace("VARS", bar).replace("RANGE", span)
            .replace("GRID_COL", str(GRID_COL)).replace("GRID_ROW", str(GRID_ROW))
            .replace("DATA_JSON", json.dumps({"panels": panels}, default=str)))


def main():
    server = Server()
    try:
        for path in MIGRATIONS:
            for statement in split_statements(path.read_text()):
                server.execute(statement)
        for statement in td.fixture_statements():
            server.execute(statement)
        import zoneinfo

        server.tz = zoneinfo.ZoneInfo(server.execute("SELECT timezone()").strip())
        with tempfile.TemporaryDirectory() as tmp:
            for uid, dashboard in td.DASHBOARDS.items():
                panels = panel_data(server, dashboard)
                height = 44 + 16 + max(p["grid"][1] + p["grid"][3] for p in panels) * GRID_ROW
                html = pathlib.Path(tmp) / f"{uid}.html"
                html.write_text(page(dashboard, panels))
                out = HERE / f"{uid}.png"
                subprocess.run(
                    ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                     "--no-first-run", "--hide-scrollbars", f"--user-data-dir={tmp}/profile",
                     f"--window-size={24 * GRID_COL + 16},{height}", f"--screenshot={out}", html.as_uri()],
                    check=True, capture_output=True, timeout=120,
                )
                print(out.relative_to(ROOT))
    finally:
        server.close()


if __name__ == "__main__":
    main()
