import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

import tally
from conftest import REPO
from tally._time import format_rfc3339, parse_rfc3339
from tally.events import EVENT_CLASSES, EVENT_TYPES

EVENT_SCHEMA = json.loads((REPO / "sdk-spec" / "schema" / "event.schema.json").read_text())


def minimal(kind, **extra):
    fields = dict(session_id="s-1", account_id="acct-1")
    if kind in ("llm_request", "llm_response"):
        fields.update(model="gpt-4o", provider="openai")
    if kind in ("tool_call", "tool_result"):
        fields.update(tool=tally.ToolInfo("search", "call-1"))
    if kind == "error":
        fields.update(error=tally.ErrorInfo(type="Timeout", message="took too long"))
    fields.update(extra)
    return EVENT_CLASSES[kind](**fields)


def test_there_is_a_class_for_every_event_type_of_the_contract():
    assert set(EVENT_CLASSES) == set(EVENT_TYPES)
    assert set(EVENT_TYPES) == set(EVENT_SCHEMA["properties"]["type"]["enum"])


@pytest.mark.parametrize("kind", EVENT_TYPES)
def test_every_type_serializes_to_what_the_schema_accepts(kind):
    jsonschema = pytest.importorskip("jsonschema")
    event = minimal(kind, trace_id="t" * 32, operation="chat", attributes={"region": "eu", "n": 2, "ok": True},
                    content={"text": "hi"}, duration_ms=12, status="ok")
    wire = event.to_wire()
    assert wire["type"] == kind
    jsonschema.Draft202012Validator(EVENT_SCHEMA).validate(wire)
    assert tally.event_from_wire(wire).to_wire() == wire


def test_ids_and_times_are_filled_in():
    before = datetime.now(timezone.utc) - timedelta(milliseconds=1)
    event = tally.UserMessage(session_id="s", account_id="a")
    after = datetime.now(timezone.utc)
    assert before <= event.timestamp <= after
    assert event.timestamp.microsecond % 1000 == 0
    assert tally.UserMessage(session_id="s", account_id="a").event_id > event.event_id


def test_the_wire_form_leaves_out_what_counts_as_absent():
    event = tally.LlmResponse(session_id="s", account_id="a", model="m", provider="p", trace_id="",
                              operation="", usage=tally.Usage(), attributes={}, tool=None)
    assert set(event.to_wire()) == {"event_id", "type", "timestamp", "session_id", "account_id", "model", "provider"}


def test_usage_always_has_its_four_counters():
    event = minimal("llm_response", usage=tally.Usage(input_tokens=7))
    assert event.to_wire()["usage"] == {"input_tokens": 7, "output_tokens": 0, "cache_read_tokens": 0,
                                        "cache_write_tokens": 0}


def test_timestamps_are_utc_with_milliseconds():
    paris = timezone(timedelta(hours=1))
    event = minimal("custom", timestamp=datetime(2026, 11, 22, 11, 0, 0, 120999, tzinfo=paris))
    assert event.to_wire()["timestamp"] == "2026-11-22T10:00:00.120Z"
    naive = minimal("custom", timestamp=datetime(2026, 11, 22, 10, 0, 0, 5000))
    assert naive.to_wire()["timestamp"] == "2026-11-22T10:00:00.005Z"
    text = minimal("custom", timestamp="2026-11-22T12:30:00.5+02:30")
    assert text.to_wire()["timestamp"] == "2026-11-22T10:00:00.500Z"


def test_rfc3339_parsing():
    assert parse_rfc3339("2026-11-22T10:00:00Z") == datetime(2026, 11, 22, 10, tzinfo=timezone.utc)
    assert parse_rfc3339("2026-11-22t10:00:00.123456789z").microsecond == 123456
    assert format_rfc3339(parse_rfc3339("2026-11-22T10:00:00.1-01:00")) == "2026-11-22T11:00:00.100Z"
    for bad in ("yesterday", "2026-11-22", "2026-11-22T10:00:00", "2026-11-22T10:00:00+0100"):
        with pytest.raises(ValueError):
            parse_rfc3339(bad)


def test_event_ids_are_normalized_uuids():
    event = minimal("custom", event_id="0193A1B2-0000-7000-8000-00000000000A")
    assert event.event_id == "0193a1b2-0000-7000-8000-00000000000a"
    with pytest.raises(ValueError):
        minimal("custom", event_id="not-a-uuid")


@pytest.mark.parametrize("kind, fields, error", [
    ("llm_request", dict(model="gpt-4o"), ValueError),
    ("llm_response", dict(provider="openai"), ValueError),
    ("llm_response", dict(model="", provider="openai"), ValueError),
    ("tool_call", {}, ValueError),
    ("error", {}, ValueError),
    ("error", dict(error=tally.ErrorInfo(stack="only a stack")), ValueError),
])
def test_per_type_requirements(kind, fields, error):
    with pytest.raises(error):
        EVENT_CLASSES[kind](session_id="s", account_id="a", **fields)


@pytest.mark.parametrize("fields, error", [
    (dict(session_id=""), ValueError),
    (dict(account_id=None), TypeError),
    (dict(session_id=5), TypeError),
    (dict(timestamp=1700000000), TypeError),
    (dict(duration_ms=1.5), TypeError),
    (dict(duration_ms=-1), ValueError),
    (dict(cost_usd=-0.5), ValueError),
    (dict(cost_usd=float("nan")), ValueError),
    (dict(cost_usd="0.1"), TypeError),
    (dict(status="fine"), ValueError),
    (dict(attributes={"nested": {"a": 1}}), TypeError),
    (dict(attributes={"": 1}), ValueError),
    (dict(usage=[1, 2]), TypeError),
    (dict(tool="search"), TypeError),
])
def test_wrong_values_are_refused_where_they_are_made(fields, error):
    base = dict(session_id="s", account_id="a")
    base.update(fields)
    with pytest.raises(error):
        tally.Custom(**base)


def test_usage_input_includes_cached_tokens():
    tally.Usage(input_tokens=10, cache_read_tokens=6, cache_write_tokens=4)
    with pytest.raises(ValueError):
        tally.Usage(input_tokens=9, cache_read_tokens=6, cache_write_tokens=4)
    with pytest.raises(TypeError):
        tally.Usage(input_tokens=True)


def test_an_event_is_abstract():
    with pytest.raises(TypeError):
        tally.Event(session_id="s", account_id="a")


def test_errors_from_exceptions():
    try:
        raise KeyError("missing")
    except KeyError as exc:
        info = tally.ErrorInfo.from_exception(exc)
    assert info.type == "KeyError" and info.message == "'missing'"
    assert "raise KeyError" in info.stack
    event = tally.ErrorEvent(session_id="s", account_id="a", error=RuntimeError("boom"))
    assert event.to_wire()["error"] == {"type": "RuntimeError", "message": "boom"}


def test_decimal_costs_are_sent_as_numbers():
    assert minimal("llm_response", cost_usd=Decimal("0.0021")).to_wire()["cost_usd"] == 0.0021


def test_reading_the_wire_ignores_unknown_fields_and_refuses_unknown_types():
    wire = minimal("user_message").to_wire()
    assert tally.event_from_wire({**wire, "future_field": {"x": 1}}).to_wire() == wire
    with pytest.raises(ValueError):
        tally.event_from_wire({**wire, "type": "telepathy"})
    with pytest.raises(ValueError):
        tally.event_from_wire({k: v for k, v in wire.items() if k != "event_id"})
