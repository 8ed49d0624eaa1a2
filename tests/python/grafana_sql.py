"""Turns a dashboard panel's SQL into the statement ClickHouse receives, the way Grafana and the
ClickHouse data source plugin (grafana-clickhouse-datasource, v4) do it:

1. in the browser, the plugin resolves `$__conditionalAll(condition, $var)` (the condition, or
   `1=1` when the variable is empty or "All"), then Grafana's template service replaces
   `$var`, `${var}` and `[[var]]` with the plugin's formatter: a multi-value variable becomes
   `'a','b'`, a single value is inserted as it is;
2. in the plugin's backend, the time macros are expanded, longest name first, each
   `$__name(args)` with its arguments split on top-level commas:
   `$__timeFilter(c)` -> `c >= toDateTime(FROM) AND c <= toDateTime(TO)`,
   `$__fromTime` / `$__toTime` -> `toDateTime(SECONDS)`, `$__interval_s` -> the query
   interval in whole seconds (at least 1), `$__timeInterval(c)` ->
   `toStartOfInterval(toDateTime(c), INTERVAL N second)` (not on ClickHouse 18.16), ...

Anything this module does not know (a variable format, a built-in like `$__interval` that
Grafana fills in, a leftover `$`) raises, so a dashboard cannot use a feature the tests do not
model.
"""

import datetime as dt
import re

ALL = "$__all"

# Grafana's built-in variables, filled in by the browser; the dashboards do not use them.
FRONTEND_BUILTINS = {
    "__interval", "__interval_ms", "__from", "__to", "__range", "__range_s", "__range_ms",
    "__rate_interval", "__dashboard", "__user", "__org", "__timezone",
}


class Variable:
    """A dashboard variable with its current selection.

    `value` is a string, a list of strings (multi-value), or ALL; `options` are the values the
    variable offers (what "All" stands for when there is no custom all value).
    """

    def __init__(self, name, value, options=(), all_value=None):
        self.name, self.value, self.options, self.all_value = name, value, list(options), all_value

    def current(self):
        """`current.value` as the browser holds it."""
        if self.value == ALL:
            return [ALL]
        return self.value

    def current_string(self):
        """`current.value.toString()` in JavaScript."""
        value = self.current()
        return ",".join(value) if isinstance(value, list) else str(value)


def _macro_args(sql, open_index):
    """The plugin's argument splitter for `$__conditionalAll(`: brackets counted, commas at
    depth one separate, no quoting rules. `open_index` is the index of the `(`."""
    args, depth, last = [], 0, open_index + 1
    for match in re.finditer(r"[(),]", sql[open_index:]):
        token, at = match.group(), open_index + match.start()
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
        if token == "," and depth == 1:
            args.append(sql[last:at])
            last = at + 1
        if depth == 0:
            args.append(sql[last:at])
            return args
    return []


def apply_conditional_all(sql, variables):
    macro = "$__conditionalAll("
    index = sql.rfind(macro)
    while index != -1:
        params = _macro_args(sql, index + len(macro) - 1)
        if len(params) != 2:
            return sql
        phrase = params[0]
        name = re.search(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", params[1].strip())
        if name:
            variable = variables.get(name.group())
            if variable is not None and variable.current_string() in ("", ALL):
                phrase = "1=1"
        sql = sql.replace(f"{macro}{params[0]},{params[1]})", phrase, 1)
        index = sql.rfind(macro)
    return sql


def _plugin_format(value):
    """The plugin's formatter for template variables."""
    if isinstance(value, list):
        return "'" + "','".join(value) + "'"
    return value


TEMPLATE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}", re.ASCII)


def replace_variables(sql, variables):
    def substitute(match):
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        if name in FRONTEND_BUILTINS:
            raise ValueError(f"built-in variable ${name} is not modelled")
        variable = variables.get(name)
        if variable is None:
            return match.group(0)  # not a variable: left for the backend (its macros)
        if fmt is not None or match.group(5) is not None:
            raise ValueError(f"variable format {match.group(0)} is not modelled")
        value = variable.value
        if value == ALL:
            if variable.all_value is not None:
                return variable.all_value
            value = list(variable.options)
        return _plugin_format(value)

    return TEMPLATE.sub(substitute, sql)


def _parse_args(rest):
    """The backend's argument parser: `(a, f(b, c))` -> ['a', 'f(b, c)'] and its length."""
    if not rest.startswith("("):
        return None, 0
    args, depth, arg = [], 0, []
    for i, ch in enumerate(rest):
        if ch == "(":
            depth += 1
            if depth == 1:
                continue
        elif ch == ")":
            depth -= 1
            if depth == 0:
                args.append("".join(arg).strip())
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append("".join(arg).strip())
            arg = []
            continue
        arg.append(ch)
    raise ValueError("macro arguments without a closing bracket")


def _one(args, name):
    if not args or len(args) != 1:
        raise ValueError(f"$__{name} takes one argument, got {args}")
    return args[0]


def _date(seconds):
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d")


def _format_interval(seconds):
    for unit, size in (("y", 31536000), ("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{int(seconds * 1000)}ms"


def backend_macros(time_from, time_to, interval_s):
    """The backend's macros for a time range (unix seconds, or float seconds for the _ms
    forms) and a query interval in seconds."""
    f, t = int(time_from), int(time_to)
    f_ms, t_ms = int(time_from * 1000), int(time_to * 1000)
    seconds = int(max(interval_s, 1))
    return {
        "fromTime": lambda a: f"toDateTime({f})",
        "toTime": lambda a: f"toDateTime({t})",
        "fromTime_ms": lambda a: f"fromUnixTimestamp64Milli({f_ms})",
        "toTime_ms": lambda a: f"fromUnixTimestamp64Milli({t_ms})",
        "timeFilter": lambda a: (lambda c: f"{c} >= toDateTime({f}) AND {c} <= toDateTime({t})")(_one(a, "timeFilter")),
        "timeFilter_ms": lambda a: (
            lambda c: f"{c} >= fromUnixTimestamp64Milli({f_ms}) AND {c} <= fromUnixTimestamp64Milli({t_ms})"
        )(_one(a, "timeFilter_ms")),
        "dateFilter": lambda a: (lambda c: f"{c} >= toDate('{_date(f)}') AND {c} <= toDate('{_date(t)}')")(
            _one(a, "dateFilter")
        ),
        "timeInterval": lambda a: f"toStartOfInterval(toDateTime({_one(a, 'timeInterval')}), INTERVAL {seconds} second)",
        "interval_s": lambda a: str(seconds),
        # The SQL data source SDK's defaults that the plugin does not override.
        "interval": lambda a: _format_interval(interval_s),
        "interval_ms": lambda a: str(int(interval_s * 1000)),
    }


def expand_backend(sql, time_from, time_to, interval_s):
    macros = backend_macros(time_from, time_to, interval_s)
    for name in sorted(macros, key=len, reverse=True):
        pattern = re.compile(r"\$__" + re.escape(name) + r"\b", re.ASCII)
        # Every occurrence is read from the statement as it is before this macro's turn, then
        # each one's text is replaced everywhere.
        found = []
        for match in pattern.finditer(sql):
            args, length = _parse_args(sql[match.end():])
            found.append((sql[match.start():match.end() + length], args))
        for full, args in found:
            sql = sql.replace(full, macros[name](args))
    return sql


def expand(raw_sql, variables, time_from, time_to, interval_s):
    """The statement ClickHouse receives for a panel's `rawSql`. `variables` maps names to
    Variable; the time range is in unix seconds; `interval_s` is Grafana's query interval."""
    sql = apply_conditional_all(raw_sql, variables)
    sql = replace_variables(sql, variables)
    sql = expand_backend(sql, time_from, time_to, interval_s)
    if "$" in sql:
        raise ValueError(f"unexpanded `$` left in:\n{sql}")
    return sql


def panel_queries(dashboard):
    """(panel, target) for every query of a dashboard, rows' panels included."""
    out = []
    for panel in dashboard.get("panels", []):
        for inner in [panel] + panel.get("panels", []):
            for target in inner.get("targets", []):
                out.append((inner, target))
    return out
