"""The quota, usage and admin vectors (sdk-spec/vectors/quota.json) against the real services.

One tally-ingest and one tally-aggregator (private topics and database, see services.py) run
with the vectors' `config`; every case runs its setup steps, then its request, and the answer
must match its `expect` (the file's `description` defines the format). A case that needs a
stale quota view runs on an ingest of its own (one per distinct case config, without the
aggregator) whose view is first seen fresh, then made stale by deleting its private quota
topic: from then on it cannot read the quota topic, which is what a stale view is. A case
that needs `own_ingest` runs on an ingest of its own with its config, view left fresh.

Beside the cases: every reason code of the server (`Reason::as_str` in
quota/src/model/check.rs) has a refusing vector and a row in sdk-spec/README.md's table and
is in the OpenAPI `QuotaReason` enum; allowed vectors cover every status; the matcher itself
is checked to refuse what it must; and the aggregator is still running after the cases.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import re
import secrets
import time
import uuid
from typing import Any

import pytest
import yaml

import services

ROOT = pathlib.Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "sdk-spec" / "vectors" / "quota.json").read_text())
CASES = VECTORS["cases"]
CONFIG = VECTORS["config"]
README = ROOT / "sdk-spec" / "README.md"
OPENAPI = ROOT / "sdk-spec" / "openapi.yaml"
REASONS_SOURCE = ROOT / "quota" / "src" / "model" / "check.rs"
STATUSES = ("ok", "warning", "critical", "exceeded")
POLL_SECONDS = 0.25
STALE_TIMEOUT = 60.0
PROJECTS = {None: "a", "other": "b"}
RUN = secrets.token_hex(4)  # {{run}}: account ids of this run differ from any other run's

tally = services.fixture("tally", scope="module", aggregator=True, ingest_config=CONFIG, aggregator_config=CONFIG)


# ----- placeholders -----

def _rfc3339(at: datetime.datetime) -> str:
    return at.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _windows(now: datetime.datetime) -> dict[str, str]:
    hour = now.replace(minute=0, second=0, microsecond=0)
    day = hour.replace(hour=0)
    month = day.replace(day=1)
    next_month = (month + datetime.timedelta(days=32)).replace(day=1)
    return {
        "hour_start": _rfc3339(hour), "hour_end": _rfc3339(hour + datetime.timedelta(hours=1)),
        "day_start": _rfc3339(day), "day_end": _rfc3339(day + datetime.timedelta(days=1)),
        "month_start": _rfc3339(month), "month_end": _rfc3339(next_month),
    }


PLACEHOLDER = re.compile(r"\{\{([^{}]+)\}\}")


class Placeholders:
    """Fills the `{{...}}` placeholders of one case; `{{uuid:NAME}}` keeps its value for the
    whole case, so an expectation can name what a request sent."""

    def __init__(self):
        self.named: dict[str, str] = {}

    def text(self, value: str) -> str:
        def one(match: re.Match) -> str:
            name = match[1]
            now = datetime.datetime.now(datetime.timezone.utc)
            if name == "run":
                return RUN
            if name == "uuid":
                return str(uuid.uuid4())
            if name.startswith("uuid:"):
                return self.named.setdefault(name, str(uuid.uuid4()))
            if name == "now":
                return _rfc3339(now)
            if name.startswith("repeat:"):
                _, char, count = name.split(":")
                return char * int(count)
            windows = _windows(now)
            if name in windows:
                return windows[name]
            raise AssertionError(f"unknown placeholder {{{{{name}}}}}")

        return PLACEHOLDER.sub(one, value)

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.fill(v) for v in value]
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value


# ----- matching -----

def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def mismatch(expected: Any, actual: Any, at: str = "") -> str | None:
    """Where `actual` fails `expected` (the vector format's matching rules), or None."""
    where = at or "the value"
    if expected == "*":
        return None
    if isinstance(expected, dict) and len(expected) == 1 and next(iter(expected)).startswith("$"):
        (op, arg), = expected.items()
        if op == "$match":
            ok = isinstance(actual, str) and re.search(arg, actual) is not None
        elif op == "$between":
            number = _number(actual)
            ok = number is not None and arg[0] <= number <= arg[1]
        elif op == "$length":
            ok = isinstance(actual, list) and len(actual) == arg
        else:
            raise AssertionError(f"unknown matcher {op}")
        return None if ok else f"{where}: {actual!r} does not satisfy {expected}"
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {actual!r}"
        for key, value in expected.items():
            if key not in actual:
                return f"{where}: no {key!r} in {sorted(actual)}"
            found = mismatch(value, actual[key], f"{at}.{key}" if at else key)
            if found:
                return found
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return f"{where}: expected {len(expected)} items, got {actual!r}"
        for i, (e, a) in enumerate(zip(expected, actual)):
            found = mismatch(e, a, f"{at}[{i}]")
            if found:
                return found
        return None
    if _number(expected) is not None and not isinstance(expected, str):
        ok = _number(actual) is not None and not isinstance(actual, str) and expected == actual
    else:
        ok = type(expected) is type(actual) and expected == actual
    return None if ok else f"{where}: expected {expected!r}, got {actual!r}"


def answer_mismatch(expect: dict, answer: services.Response) -> str | None:
    if answer.status != expect["status"]:
        return f"status {answer.status}, expected {expect['status']}"
    for name, value in expect.get("headers", {}).items():
        got = answer.headers.get(name)
        if value is None:
            if got is not None:
                return f"header {name} should be absent, got {got!r}"
            continue
        if got is None:
            return f"header {name} is missing"
        found = mismatch(value, got, f"header {name}")
        if found:
            return found
    if "body" in expect:
        try:
            body = answer.json()
        except ValueError:
            return f"the body is not JSON: {answer.body[:300]!r}"
        return mismatch(expect["body"], body)
    return None


# ----- running a case -----

def send(stack: services.Services, request: dict) -> services.Response:
    key = request.get("key", "none")
    project = PROJECTS[request.get("project")]
    headers = dict(request.get("headers", {}))
    if key == "invalid":
        headers["Authorization"] = f"Bearer tally_test_unknown_{secrets.token_hex(16)}"
        key = None
    elif key == "none":
        key = None
    else:
        key = stack.key(key, project)
    body = request["raw"].encode() if "raw" in request else None
    return stack.request(request["method"], request["path"], key=key, json_body=request.get("body"), body=body,
                         headers=headers)


def describe(request: dict, answer: services.Response) -> str:
    return f"{request['method']} {request['path']} -> {answer.status} {answer.body[:2000].decode(errors='replace')}"


def run_step(stack: services.Services, step: dict, fill: Placeholders) -> None:
    if "until" in step:
        deadline = time.monotonic() + step.get("timeout_secs", 60)
        while True:
            request = fill.fill(step["request"])
            answer = send(stack, request)
            problem = answer_mismatch(fill.fill(step["until"]), answer)
            if problem is None:
                return
            assert time.monotonic() < deadline, f"setup never reached its condition ({problem}): {describe(request, answer)}"
            time.sleep(POLL_SECONDS)
    request = fill.fill(step["request"])
    answer = send(stack, request)
    problem = answer_mismatch(fill.fill(step["expect"]), answer)
    assert problem is None, f"setup step failed ({problem}): {describe(request, answer)}"


def run_case(stack: services.Services, case: dict) -> None:
    fill = Placeholders()
    for step in case.get("setup", []):
        run_step(stack, step, fill)
    request = fill.fill(case["request"])
    answer = send(stack, request)
    problem = answer_mismatch(fill.fill(case["expect"]), answer)
    assert problem is None, f"{case['name']}: {problem}\n{describe(request, answer)}"


# ----- stacks with a stale quota view -----

def make_stale(stack: services.Services) -> None:
    """Sees the view fresh, then deletes the quota topic the ingest follows and waits until a
    check says the view is stale."""
    from confluent_kafka.admin import AdminClient

    probe = {"account_id": f"stale-probe-{RUN}"}
    first = stack.request("POST", "/v1/quota/check", key=stack.key("ingest"), json_body=probe)
    assert first.status == 200 and first.json()["stale"] is False, f"a new view should be fresh: {first.body!r}"
    admin = AdminClient({"bootstrap.servers": stack.brokers, "log_level": 3})
    for future in admin.delete_topics([stack.quota_topic], operation_timeout=30).values():
        future.result(timeout=60)
    deadline = time.monotonic() + STALE_TIMEOUT
    while True:
        answer = stack.request("POST", "/v1/quota/check", key=stack.key("ingest"), json_body=probe)
        if answer.status == 200 and answer.json()["stale"] is True:
            return
        assert time.monotonic() < deadline, f"the view did not go stale: {answer.status} {answer.body!r}"
        time.sleep(POLL_SECONDS)


@pytest.fixture(scope="module")
def own_stack():
    """`own_stack(config, stale)`: a started ingest of its own with that config (no
    aggregator), its view made stale when `stale`; one per distinct pair, stopped after the
    module."""
    stacks: dict[str, services.Services] = {}

    def get(config: dict, stale: bool) -> services.Services:
        key = json.dumps([config, stale], sort_keys=True)
        if key not in stacks:
            stack = services.Services(aggregator=False, ingest_config=config)
            stack.start()
            stacks[key] = stack
            if stale:
                make_stale(stack)
        return stacks[key]

    yield get
    for stack in stacks.values():
        stack.stop()


# ----- the cases -----

@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case, request):
    needs = set(case.get("needs", []))
    assert needs <= {"aggregator", "stale_view", "own_ingest"}, f"unknown needs {needs}"
    if needs & {"stale_view", "own_ingest"}:
        config = services.deep_merge(CONFIG, case.get("config", {}))
        stack = request.getfixturevalue("own_stack")(config, "stale_view" in needs)
    else:
        assert "config" not in case, "only stale_view and own_ingest cases run with a config of their own"
        stack = request.getfixturevalue("tally")
    run_case(stack, case)


def test_the_aggregator_outlived_the_cases(tally):
    """The aggregator folds a last adjustment after everything the cases sent (adjustments
    share one session, so they are folded in order) and is still running: a case whose events
    crash it would otherwise go unnoticed."""
    account = f"q-last-{RUN}"
    posted = tally.request("POST", f"/v1/admin/accounts/{account}/adjustments", key=tally.key("admin"),
                           json_body={"tokens": 1, "reason": "the last adjustment of the run"})
    assert posted.status == 200, posted.body
    deadline = time.monotonic() + 60
    while True:
        try:
            ready = tally.request("GET", "/readyz", base=tally.aggregator_url, timeout=5).status
        except OSError as err:
            ready = f"no answer ({err})"
        assert ready == 200, f"the aggregator is not running: /readyz {ready}"
        usage = tally.request("GET", f"/v1/usage/{account}", key=tally.key("read"))
        if usage.status == 200 and usage.json()["windows"]["month"]["tokens"] == 1:
            return
        assert time.monotonic() < deadline, f"the last adjustment was not folded: {usage.status} {usage.body[:300]!r}"
        time.sleep(POLL_SECONDS)


# ----- the file against the server's codes, the README and the OpenAPI document -----

def server_reasons() -> set[str]:
    source = REASONS_SOURCE.read_text()
    body = source[source.index("pub fn as_str") :]
    body = body[: body.index("\n    }\n")]
    reasons = set(re.findall(r'=> "([a-z_]+)"', body))
    assert len(reasons) >= 10, f"cannot read Reason::as_str in {REASONS_SOURCE}"
    return reasons


def vector_reasons() -> set[str]:
    found = set()
    for case in CASES:
        body = case["expect"].get("body", {})
        if isinstance(body, dict) and body.get("allowed") is False and isinstance(body.get("reason"), str):
            found.add(body["reason"])
    return found


def readme_reasons() -> set[str]:
    """The codes of the table in the README's "Quota reason codes" section (other sections
    have tables of their own)."""
    text = README.read_text()
    section = text.split("\n## Quota reason codes\n", 1)
    assert len(section) == 2, f"no 'Quota reason codes' section in {README}"
    body = section[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)` \|", body, re.MULTILINE))


def test_every_reason_code_has_a_vector():
    assert server_reasons() - vector_reasons() == set()
    assert vector_reasons() <= server_reasons()


def test_every_reason_code_is_in_the_readme_table_and_the_openapi_enum():
    assert readme_reasons() == server_reasons()
    spec = yaml.safe_load(OPENAPI.read_text())
    assert set(spec["components"]["schemas"]["QuotaReason"]["enum"]) == server_reasons()


def test_allowed_vectors_cover_every_status():
    statuses = {
        c["expect"]["body"]["status"]
        for c in CASES
        if isinstance(c["expect"].get("body"), dict) and c["expect"]["body"].get("allowed") is True
        and "status" in c["expect"]["body"]
    }
    assert statuses == set(STATUSES)


def test_vector_names_are_unique():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("expected", "actual"),
    [
        ({"a": 1}, {"a": 2}),
        ({"a": 1}, {"b": 1}),
        ([1, 2], [1, 2, 3]),
        ({"$match": "^x"}, "yx"),
        ({"$between": [1, 60]}, "61"),
        ({"$between": [1, 60]}, "soon"),
        ({"$length": 30}, [0] * 29),
        (None, "null"),
        (0, False),
        (1, "1"),
        ("1", 1),
    ],
)
def test_the_matcher_refuses_a_mismatch(expected, actual):
    assert mismatch(expected, actual) is not None


def test_the_matcher_accepts_a_match():
    assert mismatch({"a": "*", "b": [0, {"$match": "^ok"}], "c": {"$between": [1, 60]}, "d": {"$length": 2}},
                    {"a": None, "b": [0.0, "okay"], "c": "60", "d": [1, 2], "e": "extra"}) is None
