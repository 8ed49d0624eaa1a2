"""The OpenAPI document (sdk-spec/openapi.yaml) against the server that really runs.

- Every operation of the document is fuzzed with schemathesis against a live tally-ingest (on
  real Kafka and ClickHouse, with the aggregator folding): data that fits the document and
  data that breaks it, plus the document's own examples. Every answer must be no 5xx, a
  documented status, a documented media type, a body that fits the documented schema and the
  documented response headers, and a request the document allows must not be refused as
  malformed. Each operation gets the key its `security` names: OpenAPI 3.1 lets an `http`
  scheme list role names, so `security: [{bearer: [read]}]` means "a key with the `read`
  scope". A JSON body whose `Content-Encoding` says gzip or zstd is sent compressed.
- Every secured operation answers 401 without a key and 403 to a key of any other scope.
- A seeded session is read back, so the 200 answers of the read routes are checked too.
- Every route `ingest/src/server.rs` registers in `routes()` is documented, and every
  documented operation is served. A route that is deliberately left out of the contract is
  marked with a `// openapi: internal` comment on its line or on the comment lines right
  above it.

`TALLY_CONTRACT_EXAMPLES` sets the generated examples per operation and mode (default 40).
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import pathlib
import re
import time
import uuid

import hypothesis
import pytest
import schemathesis
import yaml
import zstandard
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

import services

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPEC_PATH = ROOT / "sdk-spec" / "openapi.yaml"
INGEST_SRC = ROOT / "ingest" / "src"
SPEC = yaml.safe_load(SPEC_PATH.read_text())
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
SCOPES = ("ingest", "read", "admin")


@schemathesis.check
def positive_data_acceptance_within_stated_rules(ctx, response, case):
    """`positive_data_acceptance`, except for a 400 whose code the operation lists in
    `x-rules-beyond-schema`: a rule across parameters (such as `from` before `to`) that no
    schema can state, answered as the document says."""
    operation = SPEC["paths"][case.operation.path][case.operation.method.lower()]
    stated = operation.get("x-rules-beyond-schema", [])
    if response.status_code == 400 and stated:
        try:
            code = response.json()["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = None
        if code in stated:
            return None
    return positive_data_acceptance(ctx, response, case)


# Not used: `negative_data_rejection` (an event that breaks the schema is rejected on its own
# inside a 200, by design) and `unsupported_method` (a method a path does not serve gets 404,
# not 405).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    positive_data_acceptance_within_stated_rules,
]
EXAMPLES = int(os.environ.get("TALLY_CONTRACT_EXAMPLES", "40"))
SESSION = "s-1"  # the session the document's examples read; seeded below

SCHEMA = schemathesis.openapi.from_path(SPEC_PATH)
SCHEMA.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE], max_examples=EXAMPLES)

tally = services.fixture("tally", scope="module", aggregator=True)


def operations():
    """(METHOD, path, operation object) of every operation in the document."""
    return [
        (method.upper(), path, item[method])
        for path, item in SPEC["paths"].items()
        for method in METHODS
        if method in item
    ]


def security_of(method: str, path: str) -> list:
    """The operation's security requirements (its own, or the document's)."""
    operation = SPEC["paths"][path][method.lower()]
    security = operation.get("security", SPEC.get("security", []))
    return [] if security == [{}] else security


def required_scope(method: str, path: str) -> str | None:
    """The key scope the document says an operation needs; None for a public one."""
    security = security_of(method, path)
    if not security:
        return None
    label = f"{method} {path}"
    assert len(security) == 1 and list(security[0]) == ["bearer"], (
        f"{label}: security must be one requirement of the `bearer` scheme, e.g. "
        f"`security: [{{bearer: [read]}}]`, not {security}"
    )
    roles = security[0]["bearer"]
    assert len(roles) == 1 and roles[0] in SCOPES, (
        f"{label}: name the one key scope it needs ({', '.join(SCOPES)}) as the bearer "
        f"requirement's role, e.g. `security: [{{bearer: [read]}}]`; found {roles}"
    )
    return roles[0]


def auth_headers(tally, method: str, path: str) -> dict[str, str]:
    scope = required_scope(method, path)
    return {"Authorization": f"Bearer {tally.key(scope)}"} if scope else {}


def now(minutes: int = 0) -> str:
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture(scope="module")
def seeded(tally):
    """A session with every kind of event, folded into ClickHouse, under the id the
    document's examples use."""
    common = {"session_id": SESSION, "account_id": "acct-1", "operation": "conversation"}
    llm = {"model": "gpt-4o", "provider": "openai", "trace_id": "t-1", "span_id": "sp-1"}
    events = [
        {"type": "session_start"},
        {"type": "user_message", "content": {"text": "hello"}},
        {"type": "llm_request", **llm},
        {"type": "llm_response", **llm, "status": "ok", "duration_ms": 840, "time_to_first_token_ms": 120,
         "usage": {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 1000, "cache_write_tokens": 0},
         "cost_usd": 0.0021, "attributes": {"temperature": 0.2, "stream": True, "region": "eu"}},
        {"type": "tool_call", "tool": {"name": "search", "call_id": "c-1"}},
        {"type": "tool_result", "tool": {"name": "search", "call_id": "c-1"}, "status": "ok", "duration_ms": 35},
        {"type": "knowledge", "content": ["doc-1"]},
        {"type": "error", "error": {"type": "Timeout", "message": "tool timed out", "stack": "at search()"}},
        {"type": "artifact", "content": {"kind": "email"}},
        {"type": "custom", "attributes": {"step": 1}},
        {"type": "session_end"},
    ]
    batch = [
        {"event_id": str(uuid.uuid4()), "timestamp": now(i - len(events)), **common, **event}
        for i, event in enumerate(events)
    ]
    answer = tally.request("POST", "/v1/batch", key=tally.key("ingest"), json_body={"batch": batch})
    assert answer.status == 200 and answer.json() == {"accepted": len(batch), "rejected": []}, answer.body
    deadline = time.monotonic() + 60
    while True:
        answer = tally.request("GET", f"/v1/sessions/{SESSION}", key=tally.key("read"))
        if answer.status == 200 and answer.json().get("event_count") == len(batch):
            return SESSION
        assert time.monotonic() < deadline, f"the seeded session was not folded: {answer.status} {answer.body!r}"
        time.sleep(0.25)


@SCHEMA.parametrize()
@hypothesis.settings(
    database=None,
    deadline=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_operation_answers_as_documented(case, tally, seeded):
    """Generated requests, valid and invalid, get documented answers."""
    headers = auth_headers(tally, case.operation.method.upper(), case.operation.path)
    case.call_and_validate(base_url=tally.url, headers=headers, checks=CHECKS, **encoded_body(case))


COMPRESS = {"gzip": gzip.compress, "x-gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress}


def encoded_body(case) -> dict:
    """A JSON body compressed as the case's `Content-Encoding` says. Schemathesis does not
    know what that header means and would send the JSON as it is, so nearly every batch would
    end as `invalid_encoding`. (The curl line of a failure shows the body before compression.)"""
    encoding = next((v for k, v in (case.headers or {}).items() if k.lower() == "content-encoding"), None)
    compress = COMPRESS.get(str(encoding).strip().lower())
    if compress is None or isinstance(case.body, NotSet) or not (case.media_type or "").endswith("json"):
        return {}
    try:
        raw = json.dumps(case.body).encode()
    except (TypeError, ValueError):
        return {}
    return {"data": compress(raw)}


def one_case(operation):
    """One request the document allows for `operation`."""
    found = []

    @hypothesis.given(operation.as_strategy(GenerationMode.POSITIVE))
    @hypothesis.settings(
        max_examples=1,
        phases=[hypothesis.Phase.generate],
        database=None,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
    )
    def pick(case):
        found.append(case)

    pick()
    return found[0]


SECURED = [(m, p) for m, p, _ in operations() if security_of(m, p)]


@pytest.mark.parametrize(("method", "path"), SECURED, ids=[f"{m} {p}" for m, p in SECURED])
def test_every_secured_operation_names_its_scope(method, path):
    assert required_scope(method, path) in SCOPES


@pytest.mark.parametrize(("method", "path"), SECURED, ids=[f"{m} {p}" for m, p in SECURED])
def test_the_documented_scope_is_enforced(tally, method, path):
    """No key: 401; a key of every other scope: 403; each a documented answer."""
    case = one_case(SCHEMA[path][method])
    scope = required_scope(method, path)
    attempts = [(None, 401)] + [(other, 403) for other in SCOPES if other != scope]
    for other, expected in attempts:
        headers = {"Authorization": f"Bearer {tally.key(other)}"} if other else {"Authorization": ""}
        response = case.call_and_validate(base_url=tally.url, headers=headers, checks=CHECKS)
        assert response.status_code == expected, (
            f"{method} {path} with {other or 'no'} key: {response.status_code} {response.text[:200]}"
        )


@pytest.mark.parametrize("path", ["/v1/sessions/{id}", "/v1/sessions/{id}/timeline"])
def test_a_folded_session_reads_as_documented(tally, seeded, path):
    """The 200 answers of the read routes, on a session that exists."""
    case = SCHEMA[path]["GET"].Case(path_parameters={"id": seeded})
    response = case.call_and_validate(base_url=tally.url, headers=auth_headers(tally, "GET", path), checks=CHECKS)
    assert response.status_code == 200, response.text


@pytest.fixture(scope="module")
def adjusted(tally):
    """A credit through the admin API, folded: the session `tally-usage-adjustments` exists."""
    answer = tally.request(
        "POST",
        "/v1/admin/accounts/acct-1/adjustments",
        key=tally.key("admin"),
        json_body={"tokens": -100, "cost_usd": -0.5, "reason": "contract test credit"},
    )
    assert answer.status == 200, answer.body
    deadline = time.monotonic() + 60
    while True:
        answer = tally.request("GET", "/v1/sessions/tally-usage-adjustments", key=tally.key("read"))
        if answer.status == 200:
            return "tally-usage-adjustments"
        assert time.monotonic() < deadline, f"the adjustment was not folded: {answer.status} {answer.body!r}"
        time.sleep(0.25)


@pytest.mark.parametrize("path", ["/v1/sessions/{id}", "/v1/sessions/{id}/timeline"])
def test_the_adjustments_session_reads_as_documented(tally, adjusted, path):
    """The session that holds usage adjustments: negative costs, `usage_adjustment` events."""
    case = SCHEMA[path]["GET"].Case(path_parameters={"id": adjusted})
    response = case.call_and_validate(base_url=tally.url, headers=auth_headers(tally, "GET", path), checks=CHECKS)
    assert response.status_code == 200, response.text


READ_ROUTES = [
    ("/v1/sessions", {}),
    ("/v1/metrics/summary", {}),
    ("/v1/metrics/usage", {"granularity": "day", "group_by": "model"}),
    ("/v1/metrics/latency", {}),
    ("/v1/metrics/tools", {}),
    ("/v1/metrics/cost", {}),
]


@pytest.mark.parametrize(("path", "query"), READ_ROUTES, ids=[p for p, _ in READ_ROUTES])
def test_the_read_routes_answer_as_documented_about_folded_data(tally, seeded, path, query):
    """The 200 answers of the sessions list and the metrics, over the seeded session."""
    case = SCHEMA[path]["GET"].Case(query={"from": now(-60), "to": now(5), **query})
    response = case.call_and_validate(base_url=tally.url, headers=auth_headers(tally, "GET", path), checks=CHECKS)
    assert response.status_code == 200, response.text
    body = response.json()
    found = body.get("sessions") or body.get("events") or body.get("points") or body.get("by_model") or body.get("tools")
    assert found, f"{path} answered about nothing: {response.text[:300]}"


def test_the_request_id_is_echoed_or_made(tally):
    """What the document says of `X-Request-Id`."""
    echoed = tally.request("GET", "/healthz", headers={"X-Request-Id": "req-1_ABC.def"})
    assert echoed.headers["X-Request-Id"] == "req-1_ABC.def"
    for bad in ("has space", "x" * 129):
        made = tally.request("GET", "/healthz", headers={"X-Request-Id": bad}).headers["X-Request-Id"]
        assert str(uuid.UUID(made)) == made, made


# ----- every route the server registers is documented -----

ROUTE_TOKEN = re.compile(
    r"""\.route\(\s*"(?P<path>[^"]*)"\s*,\s*web::(?P<method>\w+)\(\)"""  # .route("/p", web::get()
    r"""|web::resource\(\s*"(?P<resource>[^"]*)"\s*\)"""  # web::resource("/p")
    r"""|\.route\(\s*web::(?P<resource_method>\w+)\(\)"""  # .route(web::get() on that resource
    r"""|\.configure\(\s*(?P<configure>[\w:]+)\s*\)"""  # .configure(module::routes)
    r"""|(?P<unsupported>web::scope\(|web::route\(|web::method\(|\.guard\(|\.service\(\s*(?!web::resource)\w)"""
)
INTERNAL = re.compile(r"//.*openapi:\s*internal", re.IGNORECASE)


def function_body(name: str, current: pathlib.Path) -> tuple[str, pathlib.Path]:
    """The text of `fn name` in ingest/src: a bare name in `current`, `module::name` in that
    module's file (`module.rs` or `module/mod.rs`, nested modules as folders)."""
    *modules, fn = [part for part in name.split("::") if part not in ("crate", "self")]
    if modules:
        base = INGEST_SRC.joinpath(*modules)
        candidates = [base.with_suffix(".rs"), base / "mod.rs"]
    else:
        candidates = [current]
    pattern = re.compile(rf"\bfn\s+{re.escape(fn)}\s*(<[^>]*>)?\s*\(")
    found = [(f, m) for f in candidates if f.is_file() for m in [pattern.search(f.read_text())] if m]
    assert found, f"cannot find `fn {fn}` in {[str(c.relative_to(ROOT)) for c in candidates]}"
    path, match = found[0]
    text = path.read_text()
    start = text.index("{", match.end())
    depth = 0
    for i in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[start : i + 1], path
    raise AssertionError(f"unbalanced braces in fn {fn} of {path}")


def is_internal(body: str, offset: int) -> bool:
    """The registration at `offset` carries `// openapi: internal` on its line or on the
    comment lines directly above it."""
    line_start = body.rfind("\n", 0, offset) + 1
    line_end = body.find("\n", offset)
    if INTERNAL.search(body[line_start : line_end if line_end >= 0 else None]):
        return True
    above = body[:line_start].rstrip("\n").split("\n")
    while above and above[-1].strip().startswith("//"):
        if INTERNAL.search(above.pop()):
            return True
    return False


def served_routes(
    name: str = "routes", current: pathlib.Path = INGEST_SRC / "server.rs"
) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(public, internal) sets of (METHOD, path) registered by `fn name` and the functions
    it `.configure(...)`s."""
    body, source = function_body(name, current)
    public, internal = set(), set()
    resource = None
    for match in ROUTE_TOKEN.finditer(body):
        if match["unsupported"]:
            raise AssertionError(
                f"{source}: `{match['unsupported']}` in fn {name}: this test cannot read that form of "
                "route registration yet; extend ROUTE_TOKEN in tests/python/test_contract.py"
            )
        if match["configure"]:
            nested_public, nested_internal = served_routes(match["configure"], source)
            public |= nested_public
            internal |= nested_internal
            continue
        if match["resource"] is not None:
            resource = match["resource"]
            continue
        path = match["path"] if match["path"] is not None else resource
        assert path is not None, f"{source}: `.route(web::…)` outside a web::resource in fn {name}"
        method = (match["method"] or match["resource_method"]).upper()
        route = (method, re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path))  # {id:\d+} -> {id}
        (internal if is_internal(body, match.start()) else public).add(route)
    return public, internal


def shape(path: str) -> str:
    """A path with its parameters' names erased: they are not on the wire."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def test_the_route_reader_reads_routes():
    """served_routes finds the routes of a known registration, and the internal marker."""
    public, internal = served_routes()
    assert ("POST", "/v1/batch") in public and ("GET", "/healthz") in public
    sample = 'cfg.route("/a", web::get().to(a))\n    // openapi: internal\n    .route("/b/{id:\\d+}", web::post().to(b));'
    found = [(m["path"], is_internal(sample, m.start())) for m in ROUTE_TOKEN.finditer(sample)]
    assert found == [("/a", False), ("/b/{id:\\d+}", True)]


def test_every_served_route_is_documented_and_every_documented_one_served():
    public, internal = served_routes()
    served = {(m, shape(p)) for m, p in public | internal}
    documented = {(m, shape(p)) for m, p, _ in operations()}
    undocumented = sorted(f"{m} {p}" for m, p in public if (m, shape(p)) not in documented)
    unserved = sorted(f"{m} {p}" for m, p, _ in operations() if (m, shape(p)) not in served)
    problems = []
    if undocumented:
        problems.append(
            f"registered in ingest/src/server.rs routes() but missing from sdk-spec/openapi.yaml: {undocumented} "
            "(document them, or mark a route that is not part of the contract `// openapi: internal`)"
        )
    if unserved:
        problems.append(f"in sdk-spec/openapi.yaml but not registered by the server: {unserved}")
    assert not problems, "\n".join(problems)
