"""The SDK against the real stack: tally-ingest and tally-aggregator on Kafka and ClickHouse.

- A realistic session recorded through the SDK's public API is read back through
  `GET /v1/sessions/{id}/timeline` and equals, event for event, what the SDK sent.
- tally-ingest is killed with SIGKILL while events flow and restarted on the same port; the
  SDK retries and every event ends up in the timeline exactly once.
- The quota check's answers from the real route, typed.
"""

from __future__ import annotations

import secrets
import threading
import time
from types import SimpleNamespace as Obj
from typing import List

import pytest

import live
import tally
from fakes import RecordingTransport

pytestmark = pytest.mark.live


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def sdk_client(stack, transport=None, **options) -> tally.Tally:
    settings = dict(api_key=stack.key("ingest"), endpoint=stack.url, flush_at_exit=False, handle_signals=False,
                    transport=transport)
    settings.update(options)
    return tally.Tally(**settings)


def wait_for_timeline(stack, session_id: str, count: int, timeout: float = 90) -> List[dict]:
    answer = live.poll(lambda: live.timeline(stack, session_id, stack.key("read")),
                       lambda t: len(t["events"]) >= count, timeout, f"{count} events in {session_id}'s timeline")
    return answer["events"]


def test_a_session_recorded_through_the_sdk_reads_back_exactly(stack):
    transport = RecordingTransport(tally.UrllibTransport())
    client = sdk_client(stack, transport, flush_at=7, flush_interval=0.2, gzip_min_bytes=512)
    account, session_id = new_id("acct"), new_id("sess")
    openai_reply = {"model": "gpt-4o-2024-08-06", "usage": {
        "prompt_tokens": 1200, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1000}}}
    anthropic_reply = Obj(model="claude-sonnet-4-20250514", usage=Obj(
        input_tokens=100, output_tokens=250, cache_read_input_tokens=2000, cache_creation_input_tokens=300))

    def anthropic_stream():
        yield {"type": "message_start", "message": {"model": "claude-sonnet-4-20250514", "usage": {
            "input_tokens": 40, "output_tokens": 1, "cache_read_input_tokens": 512, "cache_creation_input_tokens": 0}}}
        yield {"type": "content_block_delta", "delta": {"text": "Sure"}}
        yield {"type": "message_delta", "usage": {"output_tokens": 77}}

    with client.session(account_id=account, session_id=session_id, operation="email_draft",
                        attributes={"region": "eu-west", "beta": True}) as session:
        session.user_message({"text": "Draft a reply to Bob", "lang": "en"})
        session.meter(lambda: openai_reply, model="gpt-4o", provider="openai", check_quota=False,
                      cost_usd=0.0021, content={"messages": [{"role": "user", "text": "hi"}]})
        with session.tool("crm_lookup", content={"query": "Bob"}) as lookup:
            session.meter(lambda: anthropic_reply, model="claude-sonnet-4", provider="anthropic", check_quota=False)
            lookup.result = {"found": 1}
        for _ in session.meter(anthropic_stream, model="claude-sonnet-4", provider="anthropic", check_quota=False):
            pass
        with pytest.raises(TimeoutError):
            session.meter(lambda: (_ for _ in ()).throw(TimeoutError("provider timed out")), model="gpt-4o",
                          provider="openai", check_quota=False)
        session.knowledge({"doc": "faq#12"}, attributes={"score": 0.87})
        session.artifact({"file": "reply.eml", "bytes": 2048})
        session.record(tally.LlmResponse, model="gpt-4o", provider="openai", trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
                       span_id="00f067aa0ba902b7", parent_span_id="00f067aa0ba902b6",
                       usage=tally.Usage(1200, 300, 1000, 0), cost_usd=0.0021, duration_ms=840,
                       time_to_first_token_ms=210, status="ok", content={"messages": [{"role": "user", "text": "hi"}]},
                       attributes={"streamed": True, "attempt": 1})
        session.custom("ünïcode ✓ \u2028 content")
    assert client.close(30)
    assert client.stats().failed == 0 and client.stats().rejected == 0
    assert any(r.headers.get("content-encoding") == "gzip" for r in transport.requests)
    assert len(transport.batch_sizes()) > 1

    sent = transport.sent_events()
    assert [e["type"] for e in sorted(sent, key=lambda e: e["event_id"])] == [
        "session_start", "user_message", "llm_request", "llm_response", "tool_call", "llm_request", "llm_response",
        "tool_result", "llm_request", "llm_response", "llm_request", "error", "knowledge", "artifact",
        "llm_response", "custom", "session_end"]
    events = wait_for_timeline(stack, session_id, len(sent))
    assert events == sorted(sent, key=lambda e: (e["timestamp"], e["event_id"]))

    by_span = {}
    for event in events:
        by_span.setdefault(event.get("span_id"), []).append(event["type"])
    responses = [e for e in events if e["type"] == "llm_response"]
    assert [r["usage"] for r in responses[:3]] == [
        {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 1000, "cache_write_tokens": 0},
        {"input_tokens": 2400, "output_tokens": 250, "cache_read_tokens": 2000, "cache_write_tokens": 300},
        {"input_tokens": 552, "output_tokens": 77, "cache_read_tokens": 512, "cache_write_tokens": 0},
    ]
    assert sorted(types for types in by_span.values() if "llm_request" in types) == sorted(
        [["llm_request", "llm_response"]] * 3 + [["llm_request", "error"]])

    summary = stack.request("GET", f"/v1/sessions/{session_id}", key=stack.key("read")).json()
    assert summary["event_count"] == len(sent)
    assert summary["llm_calls"] == sum(e["type"] == "llm_request" for e in sent)
    assert summary["tool_calls"] == sum(e["type"] == "tool_call" for e in sent)
    for counter in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        assert summary["usage"][counter] == sum(e.get("usage", {}).get(counter, 0) for e in sent)
    assert summary["provided_cost_usd"] == pytest.approx(sum(e.get("cost_usd", 0) for e in sent), abs=1e-9)
    assert (summary["state"], summary["status"]) == ("ended", "error")


def test_ingest_killed_mid_run_and_restarted_loses_nothing_and_doubles_nothing(stack):
    """tally-devstack kills the stack's ingest and starts it again on the same port."""
    transport = RecordingTransport(tally.UrllibTransport())
    client = sdk_client(stack, transport, flush_at=25, flush_interval=0.05,
                        max_retries=1000, backoff_base=0.05, backoff_max=0.5, request_timeout=3,
                        max_queue_size=100_000)
    account, session_id = new_id("acct"), new_id("outage")
    before, during = 1000, 500  # recorded while ingest runs (and is killed), then while it is down
    total = before + during
    recorded: List[str] = []
    down = threading.Event()
    produced = threading.Event()

    def produce():
        for i in range(total):
            if i == before:
                down.wait(120)
            event = tally.Custom(session_id=session_id, account_id=account, attributes={"seq": i})
            assert client.record(event)
            recorded.append(event.event_id)
            if i % 25 == 24:
                time.sleep(0.01)  # an application's pace, so the kill falls while events flow
        produced.set()

    producer = threading.Thread(target=produce)
    producer.start()
    live.poll(lambda: client.stats().accepted, lambda n: n >= 200, 60, "200 events accepted before the kill")
    stack.kill("ingest")
    retries = client.stats().retries
    live.poll(lambda: client.stats().retries, lambda n: n >= retries + 3, 60, "retries while ingest is down")
    down.set()
    live.poll(lambda: len(recorded), lambda n: n == total, 120, "every event recorded while ingest is down")
    stack.start_service("ingest")
    producer.join(120)
    assert produced.is_set()
    assert client.flush(120)
    stats = client.stats()
    assert (stats.failed, stats.dropped, stats.rejected) == (0, 0, 0)
    assert stats.accepted >= total
    assert None in transport.statuses  # some requests got no answer

    events = wait_for_timeline(stack, session_id, total, timeout=120)
    ids = [e["event_id"] for e in events]
    assert len(ids) == len(set(ids)) == total
    assert sorted(ids) == sorted(recorded)
    summary = live.poll(lambda: stack.request("GET", f"/v1/sessions/{session_id}", key=stack.key("read")).json(),
                        lambda s: s.get("event_count", 0) >= total, 60, "the session rollup")
    assert summary["event_count"] == total  # a resend counted twice would show here
    client.close(5)


def test_quota_checks_against_the_real_route(stack):
    client = sdk_client(stack, quota_timeout=5, quota_fail_open=False)
    account = new_id("acct")
    small = client.check(account, model="gpt-4o", estimated_tokens=100)
    assert small.allowed and not small.fallback and small.reason is None
    assert small.plan == "sdk" and small.status in tally.quota.KNOWN_STATUSES
    per_request = small.limit("tokens_per_request")
    assert per_request is not None and per_request.limit == live.QUOTA_PLAN["limits"]["tokens_per_request"]
    assert small.header_limit is not None and small.header_remaining is not None

    too_big = client.check(account, model="gpt-4o", estimated_tokens=per_request.limit + 1)
    assert not too_big.allowed and not too_big.fallback
    assert too_big.reason == "tokens_per_request_exceeded" and too_big.known_reason

    other_model = client.check(account, model="gpt-3.5-turbo")
    assert not other_model.allowed and other_model.reason == "model_not_allowed"

    reserved = client.check(account, model="gpt-4o", operation="bulk_export")
    assert not reserved.allowed and reserved.reason == "operation_not_in_plan"

    calls = []
    with client.session(account_id=account) as session:
        with pytest.raises(tally.QuotaExceeded) as refused:
            session.meter(lambda: calls.append(1), model="gpt-4o", provider="openai", estimated_tokens=10_000)
        reply = session.meter(lambda: {"usage": {"prompt_tokens": 10, "completion_tokens": 2}}, model="gpt-4o",
                              provider="openai", estimated_tokens=12)
    assert calls == [] and refused.value.result.reason == "tokens_per_request_exceeded"
    assert reply["usage"]["prompt_tokens"] == 10

    wrong_key = tally.Tally(api_key="not-a-key", endpoint=stack.url, flush_at_exit=False, quota_fail_open=False)
    refused_key = wrong_key.check(account)
    assert refused_key.fallback and not refused_key.allowed and "401" in refused_key.error
    assert client.close(30)
