"""Sessions, metered calls, streams and tools: the events they record."""

import asyncio
import time
from types import SimpleNamespace as Obj

import pytest

import tally
from tally.transport import HttpResponse

OPENAI = {"id": "chatcmpl-1", "model": "gpt-4o-2024-08-06", "choices": [{"message": {"content": "hi"}}],
          "usage": {"prompt_tokens": 1200, "completion_tokens": 300, "prompt_tokens_details": {"cached_tokens": 1000}}}
ANTHROPIC = Obj(id="msg_1", model="claude-sonnet-4-20250514", content=[Obj(type="text", text="hi")],
                usage=Obj(input_tokens=100, output_tokens=250, cache_read_input_tokens=2000,
                          cache_creation_input_tokens=300))


@pytest.fixture
def client(make_client, memory):
    return make_client(transport=memory, flush_at=1000, flush_interval=60)


def sent(client, memory):
    assert client.flush(5)
    return memory.events()


def by_type(events):
    out = {}
    for e in events:
        out.setdefault(e["type"], []).append(e)
    return out


def test_a_metered_openai_call(client, memory):
    with client.session(account_id="acct-1", session_id="sess-1", operation="chat") as session:
        def call():
            time.sleep(0.05)  # the model's own latency
            return OPENAI
        assert session.meter(call, model="gpt-4o", provider="openai", estimated_tokens=1500) is OPENAI
    events = sent(client, memory)
    assert [e["type"] for e in events] == ["session_start", "llm_request", "llm_response", "session_end"]
    start, request, response, end = events
    assert request["trace_id"] == response["trace_id"] == start["trace_id"] == end["trace_id"]
    assert request["span_id"] == response["span_id"] != start["span_id"]
    assert request["parent_span_id"] == response["parent_span_id"] == start["span_id"]
    assert request["model"] == "gpt-4o" and response["model"] == "gpt-4o-2024-08-06"
    assert response["usage"] == {"input_tokens": 1200, "output_tokens": 300, "cache_read_tokens": 1000,
                                 "cache_write_tokens": 0}
    assert response["duration_ms"] >= 50 and response["status"] == "ok"
    assert all(e["session_id"] == "sess-1" and e["account_id"] == "acct-1" for e in events)
    assert all(e["operation"] == "chat" for e in events)
    assert end["status"] == "ok"
    (check,) = memory.quota_requests()
    assert check.json == {"account_id": "acct-1", "model": "gpt-4o", "operation": "chat", "estimated_tokens": 1500}


def test_a_metered_anthropic_call_counts_cache_tokens_in_the_input(client, memory):
    with client.session(account_id="acct-1") as session:
        session.meter(lambda: ANTHROPIC, model="claude-sonnet-4", provider="anthropic", check_quota=False)
    (response,) = by_type(sent(client, memory))["llm_response"]
    assert response["usage"] == {"input_tokens": 2400, "output_tokens": 250, "cache_read_tokens": 2000,
                                 "cache_write_tokens": 300}
    assert response["model"] == "claude-sonnet-4-20250514"
    assert memory.quota_requests() == []


def test_a_failing_call_records_an_error_and_raises(client, memory):
    with pytest.raises(TimeoutError):
        with client.session(account_id="acct-1") as session:
            def call():
                raise TimeoutError("provider timed out")
            session.meter(call, model="gpt-4o", provider="openai")
    events = sent(client, memory)
    assert [e["type"] for e in events] == ["session_start", "llm_request", "error", "session_end"]
    request, error, end = events[1:]
    assert error["span_id"] == request["span_id"] and error["trace_id"] == request["trace_id"]
    assert error["error"]["type"] == "TimeoutError" and error["error"]["message"] == "provider timed out"
    assert "raise TimeoutError" in error["error"]["stack"]
    assert error["status"] == "error" and error["model"] == "gpt-4o" and "duration_ms" in error
    assert end["status"] == "error"


def test_a_refused_quota_stops_the_call(client, memory):
    memory.quota_reply = {"allowed": False, "reason": "tokens_per_day_exceeded", "status": "exceeded",
                          "plan": "free", "limits": [], "requires_upgrade": True, "stale": False}
    calls = []
    with client.session(account_id="acct-1") as session:
        with pytest.raises(tally.QuotaExceeded) as refused:
            session.meter(lambda: calls.append(1), model="gpt-4o", provider="openai", estimated_tokens=10)
    assert calls == []
    assert refused.value.result.reason == "tokens_per_day_exceeded" and refused.value.result.requires_upgrade
    events = by_type(sent(client, memory))
    assert "llm_request" not in events
    (error,) = events["error"]
    assert error["error"] == {"type": "QuotaExceeded", "message": "tokens_per_day_exceeded"}


def test_an_unreachable_quota_service_fails_open_or_closed(make_client, memory):
    memory.quota_reply = tally.TransportError("connection refused")
    opened = make_client(transport=memory, quota_fail_open=True)
    with opened.session(account_id="a") as session:
        assert session.meter(lambda: OPENAI, model="gpt-4o", provider="openai") is OPENAI
    closed = make_client(transport=memory, quota_fail_open=False)
    with closed.session(account_id="a") as session:
        with pytest.raises(tally.QuotaExceeded) as refused:
            session.meter(lambda: OPENAI, model="gpt-4o", provider="openai")
    assert refused.value.result.fallback


def openai_stream(delay_first=0.0, fail_after=None):
    if delay_first:
        time.sleep(delay_first)  # the model's time to first token
    for i, text in enumerate(["Hel", "lo", "!"]):
        if fail_after is not None and i == fail_after:
            raise ConnectionError("stream cut")
        yield Obj(model="gpt-4o-2024-08-06", choices=[Obj(delta=Obj(content=text))], usage=None)
    yield Obj(model="gpt-4o-2024-08-06", choices=[],
              usage=Obj(prompt_tokens=20, completion_tokens=3, prompt_tokens_details=Obj(cached_tokens=0)))


def test_a_stream_is_metered_as_it_is_consumed(client, memory):
    with client.session(account_id="acct-1") as session:
        stream = session.meter(lambda: openai_stream(delay_first=0.04), model="gpt-4o", provider="openai")
        assert by_type(sent(client, memory)).get("llm_response") is None  # not before the stream ends
        texts = []
        for chunk in stream:
            if chunk.choices:
                texts.append(chunk.choices[0].delta.content)
            if len(texts) == 1:
                time.sleep(0.03)  # the caller's own work between chunks
    assert texts == ["Hel", "lo", "!"]
    (response,) = by_type(sent(client, memory))["llm_response"]
    assert response["usage"] == {"input_tokens": 20, "output_tokens": 3, "cache_read_tokens": 0,
                                 "cache_write_tokens": 0}
    assert response["time_to_first_token_ms"] >= 40
    assert response["duration_ms"] >= response["time_to_first_token_ms"] + 30


def test_an_anthropic_stream(client, memory):
    def stream():
        yield Obj(type="message_start", message=Obj(model="claude-3-5-haiku-20241022", usage=Obj(
            input_tokens=12, output_tokens=1, cache_read_input_tokens=1000, cache_creation_input_tokens=50)))
        yield Obj(type="content_block_delta", delta=Obj(text="hi"))
        yield Obj(type="message_delta", delta=Obj(stop_reason="end_turn"), usage=Obj(output_tokens=42))

    with client.session(account_id="acct-1") as session:
        for _ in session.meter(stream, model="claude-3-5-haiku", provider="anthropic"):
            pass
    (response,) = by_type(sent(client, memory))["llm_response"]
    assert response["usage"] == {"input_tokens": 1062, "output_tokens": 42, "cache_read_tokens": 1000,
                                 "cache_write_tokens": 50}


def test_a_stream_that_breaks_records_an_error_and_one_closed_early_records_once(client, memory):
    with client.session(account_id="acct-1") as session:
        broken = session.meter(lambda: openai_stream(fail_after=2), model="gpt-4o", provider="openai")
        with pytest.raises(ConnectionError):
            list(broken)
        early = session.meter(lambda: openai_stream(), model="gpt-4o", provider="openai")
        next(early)
        early.close()
        early.close()
    events = by_type(sent(client, memory))
    (error,) = events["error"]
    assert error["error"]["type"] == "ConnectionError" and "time_to_first_token_ms" in error
    (response,) = events["llm_response"]
    assert response["status"] == "ok" and "usage" not in response  # usage had not arrived yet


def test_async_calls_and_async_streams(client, memory):
    async def create():
        await asyncio.sleep(0.01)
        return OPENAI

    async def create_stream():
        async def chunks():
            for chunk in openai_stream():
                yield chunk
        return chunks()

    async def main():
        with client.session(account_id="acct-1") as session:
            assert await session.ameter(create, model="gpt-4o", provider="openai") is OPENAI
            stream = await session.ameter(create_stream, model="gpt-4o", provider="openai")
            return [c async for c in stream]

    chunks = asyncio.run(main())
    assert len(chunks) == 4
    responses = by_type(sent(client, memory))["llm_response"]
    assert [r["usage"]["input_tokens"] for r in responses] == [1200, 20]


def test_an_async_call_through_the_sync_meter_is_refused(client, memory):
    async def create():
        return OPENAI

    with client.session(account_id="acct-1") as session:
        with pytest.raises(TypeError):
            session.meter(create, model="gpt-4o", provider="openai")


def test_decorators_tools_and_the_current_session(client, memory):
    @client.metered(model="gpt-4o", provider="openai", check_quota=False)
    def ask(question):
        return OPENAI

    @client.tool("search")
    def search(query):
        return ask(query)

    with client.session(account_id="acct-1", attributes={"tenant": "t1"}) as session:
        assert tally.current_session() is session
        search("weather")
        with pytest.raises(ValueError):
            with session.tool("calculator", call_id="call-7") as tool:
                tool.result = {"partial": True}
                raise ValueError("division by zero")
    assert tally.current_session() is None
    events = sent(client, memory)
    assert [e["type"] for e in events] == ["session_start", "tool_call", "llm_request", "llm_response",
                                           "tool_result", "tool_call", "tool_result", "session_end"]
    start, call, request, response, result, call2, result2, end = events
    assert call["tool"] == result["tool"] and call["tool"]["name"] == "search"
    assert call["span_id"] == result["span_id"] and call["parent_span_id"] == start["span_id"]
    assert request["parent_span_id"] == call["span_id"]  # the LLM call ran inside the tool
    assert result["status"] == "ok" and result["duration_ms"] >= 0
    assert call2["tool"] == {"name": "calculator", "call_id": "call-7"}
    assert result2["status"] == "error" and result2["error"]["type"] == "ValueError"
    assert result2["content"] == {"partial": True}
    assert all(e["attributes"] == {"tenant": "t1"} for e in events)


def test_metering_outside_a_session_needs_ids(client, memory):
    with pytest.raises(RuntimeError):
        client.meter(lambda: OPENAI, model="gpt-4o", provider="openai")
    client.meter(lambda: OPENAI, model="gpt-4o", provider="openai", session_id="s-9", account_id="a-9")
    events = sent(client, memory)
    assert [e["type"] for e in events] == ["llm_request", "llm_response"]
    assert {e["session_id"] for e in events} == {"s-9"}


def test_the_llm_call_context_manager(client, memory):
    with client.session(account_id="acct-1") as session:
        with session.llm_call(model="claude-sonnet-4", provider="anthropic", cost_usd=0.0123,
                              check_quota=False) as call:
            call.set_response(ANTHROPIC)
    (response,) = by_type(sent(client, memory))["llm_response"]
    assert response["cost_usd"] == 0.0123 and response["usage"]["input_tokens"] == 2400


def test_session_helpers(client, memory):
    with client.session(account_id="acct-1") as session:
        session.user_message({"text": "hi"})
        session.knowledge({"doc": "faq#3"})
        session.artifact({"file": "report.pdf"})
        session.custom({"k": 1}, attributes={"kind": "feedback"})
        session.error("something odd")
    events = sent(client, memory)
    assert [e["type"] for e in events] == ["session_start", "user_message", "knowledge", "artifact", "custom",
                                           "error", "session_end"]
    assert events[5]["error"] == {"message": "something odd"} and events[5]["status"] == "error"


def test_a_failure_to_record_does_not_break_the_call(make_client, memory, caplog):
    client = make_client(transport=memory)
    with client.session(account_id="acct-1") as session:
        # A request content json cannot write: recording llm_request fails, the call goes on.
        result = session.meter(lambda: OPENAI, model="gpt-4o", provider="openai", content={1, 2})
    assert result is OPENAI
    assert "could not record a llm_request event" in caplog.text
    assert "llm_response" in by_type(sent(client, memory))
