"""The shared vectors of `sdk-spec/vectors/` that concern the requests an SDK builds, run
through this SDK against the real tally-ingest.

Each vector's events are built with the SDK's typed events (`event_from_wire`, as a user
would fill the fields) and posted with the SDK's client. The SDK must:

- refuse to build exactly the events the server rejects for their shape (missing fields,
  wrong types and values, unknown types, non-objects), raising where the mistake is made;
- build every other event, in the wire form the vector gives (after the contract's own
  normalisation: empty strings absent, unknown fields dropped), so the server answers for it
  as the vector says: accepted, or rejected per event for what only the server can judge
  (its length and size limits, duplicate ids in a batch, timestamps out of its window), those
  rejections reaching `on_rejected` with the vector's index, id, code and field;
- keep batches within the server's event limit (the 413 vector) by splitting them;
- gzip bodies the server reads, and never retry an auth failure (401, 403).

Vectors about request envelopes the SDK cannot produce (raw bodies, a JSON array, no batch,
an empty batch, a bad sent_at, a wrong content type or a claimed but missing encoding, zstd,
no key) are listed in NOT_APPLICABLE with the reason; the unit tests check the SDK's side of
them (content type, sent_at, gzip only when compressed, a key required). A vector in neither
list fails the test until it is classified.
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Dict, List

import pytest

import tally
from conftest import REPO
from fakes import RecordingTransport
from tally._time import format_rfc3339, parse_rfc3339

pytestmark = pytest.mark.live

# The write-path vectors; the quota vectors are covered by the quota tests against the server.
CASES = json.loads((REPO / "sdk-spec" / "vectors" / "batch.json").read_text())["cases"]

SHAPE_CODES = {"not_an_object", "missing_field", "invalid_type", "invalid_value", "unknown_event_type"}

NOT_APPLICABLE = {
    "body that is not JSON": "the SDK writes its bodies with json.dumps",
    "body that is an array": "the SDK's body is always an object with `batch`",
    "body without batch": "the SDK's body is always an object with `batch`",
    "empty batch": "the SDK sends only when it has events",
    "sent_at that is not a time": "the SDK writes sent_at from its clock in RFC 3339",
    "zstd body": "the SDK compresses with gzip only (zstd is not in Python's standard library before 3.14)",
    "body claimed gzip but plain": "the SDK sets Content-Encoding only on bodies it gzipped",
    "unsupported encoding": "the SDK sets Content-Encoding only on bodies it gzipped",
    "not application/json": "the SDK always sends Content-Type: application/json",
    "no key": "the client cannot be made without a key (tests/test_delivery.py)",
}
BATCH_SIZE = {"more than 1000 events", "exactly 1000 events"}
AUTH = {"unknown key", "read-only key cannot post"}
GZIP = {"gzip body"}


def expand(value: Any) -> Any:
    """The vectors' placeholders, as the file's description defines them."""
    if isinstance(value, str) and value.startswith("{{") and value.endswith("}}"):
        spec = value[2:-2]
        if spec.startswith("now"):
            now = datetime.datetime.now(datetime.timezone.utc)
            rest = spec[3:]
            if rest:
                amount = int(rest[1:-1]) * (1 if rest[0] == "+" else -1)
                unit = {"d": "days", "h": "hours", "m": "minutes"}[rest[-1]]
                now += datetime.timedelta(**{unit: amount})
            return format_rfc3339(now)
        if spec.startswith("repeat:"):
            text, count = spec[len("repeat:"):].rsplit(":", 1)
            return text * int(count)
        if spec.startswith("events:"):
            return [{"event_id": str(tally.uuid7()), "type": "custom", "timestamp": expand("{{now-1m}}"),
                     "session_id": "s", "account_id": "a"} for _ in range(int(spec[len("events:"):]))]
        raise ValueError(f"unknown placeholder {spec}")
    if isinstance(value, list):
        return [expand(v) for v in value]
    if isinstance(value, dict):
        return {k: expand(v) for k, v in value.items()}
    return value


def matches(expected: Any, actual: Any) -> bool:
    """The vectors' subset match: given keys must match, arrays have equal length, "*" is anything."""
    if expected == "*":
        return True
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and matches(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            matches(e, a) for e, a in zip(expected, actual))
    return expected == actual


WIRE_FIELDS = ("event_id", "type", "timestamp", "session_id", "account_id", "trace_id", "span_id", "parent_span_id",
               "operation", "model", "provider", "usage", "cost_usd", "duration_ms", "time_to_first_token_ms", "status",
               "tool", "error", "content", "attributes")


def normalized(raw: Dict[str, Any]) -> Dict[str, Any]:
    """A vector's event as the contract reads it: unknown fields ignored, null and "" absent,
    `usage` with its four counters, times in UTC with milliseconds."""
    out: Dict[str, Any] = {}
    for name in WIRE_FIELDS:
        value = raw.get(name)
        if value is None or value == "" or value == {}:
            continue
        if name == "timestamp":
            value = format_rfc3339(parse_rfc3339(value))
        if name == "usage":
            value = {k: value.get(k) or 0 for k in ("input_tokens", "output_tokens", "cache_read_tokens",
                                                      "cache_write_tokens")}
            if not any(value.values()):
                continue
        if name in ("tool", "error"):
            value = {k: v for k, v in value.items() if v not in (None, "")}
        out[name] = value
    return out


def client_for(stack, key: str, **options: Any) -> tally.Tally:
    settings = dict(api_key=key, endpoint=stack.url, flush_at=10_000, flush_interval=3600, max_batch_events=1000,
                    max_batch_bytes=8_000_000, gzip_min_bytes=None, flush_at_exit=False, handle_signals=False,
                    max_retries=2, backoff_base=0.05)
    settings.update(options)
    return tally.Tally(**settings)


def event_cases():
    for case in CASES:
        request, expect = case["request"], case["expect"]
        if case["name"] in set(NOT_APPLICABLE) | BATCH_SIZE | AUTH | GZIP:
            continue
        if expect["status"] == 200 and "body" in request and request.get("key") == "ingest" \
                and not request.get("headers") and not request.get("encoding"):
            yield case


EVENT_CASES = list(event_cases())


def test_every_vector_is_run_or_set_aside_with_a_reason():
    run = {c["name"] for c in EVENT_CASES} | BATCH_SIZE | AUTH | GZIP
    unclassified = [c["name"] for c in CASES if c["name"] not in run and c["name"] not in NOT_APPLICABLE]
    assert not unclassified
    assert len(EVENT_CASES) >= 35


@pytest.mark.parametrize("case", EVENT_CASES, ids=[c["name"] for c in EVENT_CASES])
def test_events_built_by_the_sdk_get_the_vectors_answer(stack, case):
    raw_events = expand(case["request"]["body"])["batch"]
    expected = case["expect"]["body"]
    expected_rejections = expected.get("rejected")

    built: List[tally.Event] = []
    positions: List[int] = []  # index in the vector of each event the SDK built
    refused = set()
    for index, raw in enumerate(raw_events):
        try:
            event = tally.event_from_wire(raw)
        except (TypeError, ValueError):
            refused.add(index)
            continue
        assert event.to_wire() == normalized(raw)
        built.append(event)
        positions.append(index)

    shape_rejections = {r["index"] for r in expected_rejections or [] if r["code"] in SHAPE_CODES}
    assert refused == shape_rejections, "the SDK must refuse exactly what the server rejects for its shape"

    if not built:
        assert expected["accepted"] == 0
        return
    seen: List[tally.Rejection] = []
    client = client_for(stack, stack.key("ingest"), on_rejected=seen.extend)
    try:
        for event in built:
            assert client.record(event)
        assert client.flush(60)
    finally:
        client.close(5)
    stats = client.stats()
    assert stats.failed == 0
    assert stats.accepted == expected["accepted"]
    if expected_rejections is not None:
        server_only = [dict(r, index=positions.index(r["index"])) for r in expected_rejections
                       if r["index"] not in refused]
        actual = [{"index": r.index, "event_id": r.event_id, "code": r.code, "field": r.field, "message": r.message}
                  for r in sorted(seen, key=lambda r: r.index)]
        assert matches(server_only, actual), (server_only, actual)
        assert all(r.event == built[r.index].to_wire() for r in seen)


@pytest.mark.parametrize("name", sorted(BATCH_SIZE))
def test_batches_stay_within_the_servers_event_limit(stack, name):
    (case,) = [c for c in CASES if c["name"] == name]
    raw_events = expand(case["request"]["body"])["batch"]
    limit = 1000  # the server's max_batch_events, which the 413 vector is about
    transport = RecordingTransport(tally.UrllibTransport())
    client = client_for(stack, stack.key("ingest"), max_batch_events=limit, transport=transport)
    try:
        for raw in raw_events:
            assert client.record(tally.event_from_wire(raw))
        assert client.flush(60)
    finally:
        client.close(5)
    assert transport.batch_sizes() == [limit] * (len(raw_events) // limit) + (
        [len(raw_events) % limit] if len(raw_events) % limit else [])
    assert len(transport.batch_sizes()) == math.ceil(len(raw_events) / limit)
    assert set(transport.statuses) == {200}
    assert client.stats().accepted == len(raw_events)
    if case["expect"]["status"] == 200:
        assert client.stats().accepted == case["expect"]["body"]["accepted"]


def test_gzip_bodies_are_read_by_the_server(stack):
    (case,) = [c for c in CASES if c["name"] in GZIP]
    transport = RecordingTransport(tally.UrllibTransport())
    client = client_for(stack, stack.key("ingest"), gzip_min_bytes=0, transport=transport)
    try:
        for raw in expand(case["request"]["body"])["batch"]:
            client.record(tally.event_from_wire(raw))
        assert client.flush(60)
    finally:
        client.close(5)
    assert all(r.headers.get("content-encoding") == "gzip" for r in transport.requests)
    assert client.stats().accepted == case["expect"]["body"]["accepted"]


@pytest.mark.parametrize("name", sorted(AUTH))
def test_auth_failures_are_reported_and_not_retried(stack, name):
    (case,) = [c for c in CASES if c["name"] == name]
    key = {"invalid": "not-a-key", "read": stack.key("read")}[case["request"]["key"]]
    errors: List[tally.DeliveryError] = []
    transport = RecordingTransport(tally.UrllibTransport())
    client = client_for(stack, key, on_error=errors.append, transport=transport, max_retries=5)
    try:
        for raw in expand(case["request"]["body"])["batch"]:
            client.record(tally.event_from_wire(raw))
        assert client.flush(60)
    finally:
        client.close(5)
    assert transport.statuses == [case["expect"]["status"]]
    (error,) = errors
    assert error.status == case["expect"]["status"] and not error.retryable
    assert error.code == case["expect"]["body"]["error"]["code"]
