"""Batching, compression, retries and the queue, against a scripted HTTP server."""

import gzip
import json
import time

import pytest

import tally
from fakes import Reply
from tally._time import parse_rfc3339


def event(i=0, **extra):
    return tally.Custom(session_id="s-1", account_id="acct-1", attributes={"i": i}, **extra)


def test_a_full_batch_goes_at_once_and_looks_like_the_contract(fake, make_client):
    client = make_client(endpoint=fake.url, flush_at=5, flush_interval=60, gzip_min_bytes=None)
    sent = [event(i) for i in range(5)]
    started = time.monotonic()
    for e in sent:
        assert client.record(e)
    (request,) = fake.wait_for(lambda r: len(r) == 1)
    assert request.at - started < 30  # the size triggered it, not the 60 s age
    assert request.method == "POST" and request.path == "/v1/batch"
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.headers["content-type"] == "application/json"
    assert "content-encoding" not in request.headers
    assert request.events == [e.to_wire() for e in sent]
    assert request.json["sdk"] == {"name": "tally-py", "version": tally.__version__}
    parse_rfc3339(request.json["sent_at"])
    assert client.flush(5)
    assert client.stats().accepted == 5


def test_a_small_batch_goes_when_it_is_old_enough(fake, make_client):
    client = make_client(endpoint=fake.url, flush_at=100, flush_interval=0.3)
    recorded_at = time.monotonic()
    client.record(event())
    (request,) = fake.wait_for(lambda r: len(r) == 1)
    assert request.at - recorded_at >= 0.3
    assert len(request.events) == 1


def test_large_bodies_are_gzipped(fake, make_client):
    client = make_client(endpoint=fake.url, gzip_min_bytes=2000)
    small, large = event(content="x"), event(content="y" * 5000)
    client.record(small)
    assert client.flush(5)
    client.record(large)
    assert client.flush(5)
    first, second = fake.batches()
    assert "content-encoding" not in first.headers and first.events == [small.to_wire()]
    assert second.headers["content-encoding"] == "gzip"
    assert json.loads(gzip.decompress(second.raw))["batch"] == [large.to_wire()]
    assert len(second.raw) < 2000


def test_batches_respect_the_event_and_byte_limits_and_keep_order(fake, make_client):
    client = make_client(endpoint=fake.url, flush_at=1000, max_batch_events=7, max_batch_bytes=3000)
    sent = [event(i, content="z" * 200) for i in range(40)]
    for e in sent:
        client.record(e)
    assert client.flush(10)
    batches = fake.batches()
    assert all(len(b.events) <= 7 for b in batches)
    assert all(len(b.raw) <= 3000 + 200 for b in batches)  # the events, plus the envelope
    assert [e for b in batches for e in b.event_ids] == [e.event_id for e in sent]


@pytest.mark.parametrize("failure", [
    Reply(503, {"Retry-After": "1"}, {"error": {"code": "unavailable", "message": "kafka"}}),
    Reply(429, {"Retry-After": "1"}, {"error": {"code": "rate_limited", "message": "slow down"}}),
])
def test_503_and_429_are_retried_after_retry_after_with_the_same_events(fake, make_client, failure):
    fake.script.append(failure)
    client = make_client(endpoint=fake.url)
    sent = [event(i) for i in range(3)]
    for e in sent:
        client.record(e)
    assert client.flush(10)
    first, second = fake.batches()
    assert second.at - first.at >= 1.0  # Retry-After: 1 was honoured
    assert first.event_ids == second.event_ids == [e.event_id for e in sent]
    assert first.events == second.events
    stats = client.stats()
    assert (stats.accepted, stats.retries, stats.failed) == (3, 1, 0)


@pytest.mark.parametrize("failure", [Reply(500, body={"error": {"code": "internal", "message": "x"}}),
                                     Reply(502, body=b"bad gateway"), Reply(action="drop")])
def test_server_errors_and_lost_connections_are_retried(fake, make_client, failure):
    fake.script.extend([failure, failure])
    client = make_client(endpoint=fake.url)
    e = event()
    client.record(e)
    assert client.flush(10)
    batches = fake.batches()
    assert [b.event_ids for b in batches] == [[e.event_id]] * 3
    assert client.stats().accepted == 1 and client.stats().retries == 2


def test_a_dead_endpoint_is_retried_with_growing_backoff_then_given_up(make_client):
    errors = []
    client = make_client(endpoint="http://127.0.0.1:9", max_retries=3, backoff_base=0.05, backoff_max=1,
                         on_error=errors.append)
    e = event()
    client.record(e)
    assert client.flush(10)
    (error,) = errors
    assert error.status is None and error.retryable and error.event_ids == (e.event_id,)
    stats = client.stats()
    assert (stats.failed, stats.retries, stats.batches, stats.pending) == (1, 3, 4, 0)


@pytest.mark.parametrize("status, code", [(400, "invalid_batch"), (401, "unauthorized"), (403, "forbidden"),
                                          (415, "unsupported_media_type")])
def test_other_4xx_are_not_retried(fake, make_client, status, code):
    fake.default = lambda r: Reply(status, body={"error": {"code": code, "message": "no"}})
    errors = []
    client = make_client(endpoint=fake.url, on_error=errors.append)
    client.record(event())
    client.record(event())
    assert client.flush(10)
    assert len(fake.batches()) == 1
    (error,) = errors
    assert (error.status, error.code, error.retryable, len(error.event_ids)) == (status, code, False, 2)
    assert client.stats().failed == 2 and client.stats().retries == 0


def test_a_batch_too_large_for_the_server_is_sent_in_halves(fake, make_client):
    def limit_two(request):
        if len(request.events) > 2:
            return Reply(413, body={"error": {"code": "payload_too_large", "message": "too many"}})
        return Reply(200, body={"accepted": len(request.events), "rejected": []})

    fake.default = limit_two
    client = make_client(endpoint=fake.url, flush_at=1000)
    sent = [event(i) for i in range(7)]
    for e in sent:
        client.record(e)
    assert client.flush(10)
    delivered = [b.event_ids for b in fake.batches() if len(b.events) <= 2]
    assert [i for ids in delivered for i in ids] == [e.event_id for e in sent]
    assert client.stats().accepted == 7 and client.stats().failed == 0


def test_rejections_reach_the_callback_with_their_events(fake, make_client):
    def reject_second(request):
        second = request.events[1]
        return Reply(200, body={"accepted": 2, "rejected": [{
            "index": 1, "event_id": second["event_id"], "code": "too_long", "field": "account_id",
            "message": "account_id is longer than 128 characters", "hint": "a field this SDK does not know"}]})

    fake.default = reject_second
    seen = []
    client = make_client(endpoint=fake.url, on_rejected=seen.extend)
    sent = [event(i) for i in range(3)]
    for e in sent:
        client.record(e)
    assert client.flush(10)
    (rejection,) = seen
    assert rejection.index == 1 and rejection.event_id == sent[1].event_id
    assert (rejection.code, rejection.field) == ("too_long", "account_id")
    assert rejection.event == sent[1].to_wire()
    stats = client.stats()
    assert (stats.accepted, stats.rejected, stats.failed) == (2, 1, 0)


def test_a_full_queue_drops_new_events_without_blocking(fake, make_client):
    fake.default = lambda r: Reply(200, body={"accepted": len(r.events), "rejected": []}, action="hang")
    client = make_client(endpoint=fake.url, flush_at=1, max_batch_events=1, max_queue_size=3, request_timeout=30)
    first = event(0)
    client.record(first)
    fake.wait_for(lambda r: len(r) == 1)  # in flight, and the server holds it
    later = [event(i) for i in range(1, 11)]
    outcomes = []
    for e in later:
        started = time.monotonic()
        outcomes.append(client.record(e))
        assert time.monotonic() - started < 0.5  # the server holds its request for up to 60 s
    assert outcomes == [True] * 3 + [False] * 7
    assert client.stats().dropped == 7
    assert not client.flush(0.2)  # the server still holds the first batch
    fake.release()
    assert client.flush(10)
    assert [e["event_id"] for e in fake.events()] == [e.event_id for e in [first] + later[:3]]


def test_close_delivers_what_is_queued(fake, make_client):
    client = make_client(endpoint=fake.url, flush_at=1000, flush_interval=60)
    sent = [event(i) for i in range(25)]
    for e in sent:
        client.record(e)
    assert client.close(10)
    assert [e["event_id"] for e in fake.events()] == [e.event_id for e in sent]
    assert not client.record(event())
    assert client.stats().dropped == 1


def test_close_gives_up_after_its_timeout(make_client):
    errors = []
    client = make_client(endpoint="http://127.0.0.1:9", max_retries=1000, backoff_base=0.2, backoff_max=0.2,
                         on_error=errors.append)
    for i in range(5):
        client.record(event(i))
    started = time.monotonic()
    assert not client.close(1.0)
    assert time.monotonic() - started < 3
    assert client.stats().failed == 5 and client.stats().pending == 0


def test_events_that_json_cannot_write_are_refused_at_once(make_client, fake):
    client = make_client(endpoint=fake.url)
    with pytest.raises(TypeError):
        client.record(event(content={1, 2}))
    with pytest.raises(TypeError):
        client.record({"type": "custom"})
    assert client.stats().queued == 0


def test_a_disabled_client_sends_nothing(fake):
    client = tally.Tally(enabled=False, endpoint=fake.url)
    assert not client.record(event())
    assert client.flush(1) and client.close(1)
    assert fake.requests == []


def test_a_key_is_required(monkeypatch):
    monkeypatch.delenv("TALLY_API_KEY", raising=False)
    with pytest.raises(ValueError):
        tally.Tally(flush_at_exit=False)


def test_backoff_grows_has_jitter_and_honours_retry_after():
    low = [tally.backoff_delay(n, 0.5, 30, rng=lambda: 0.0) for n in range(1, 9)]
    high = [tally.backoff_delay(n, 0.5, 30, rng=lambda: 1.0) for n in range(1, 9)]
    assert low == [0.25, 0.5, 1, 2, 4, 8, 15, 15]
    assert high == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert tally.backoff_delay(1, 0.5, 30, retry_after=7, rng=lambda: 0.5) == 7
    assert tally.backoff_delay(8, 0.5, 30, retry_after=1, rng=lambda: 1.0) == 30
    assert tally.backoff_delay(1, 0.5, 30, retry_after=9999, max_retry_after=300, rng=lambda: 0.0) == 300


def test_retry_after_parsing():
    from datetime import datetime, timezone
    now = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
    assert tally.parse_retry_after("2") == 2
    assert tally.parse_retry_after("Sun, 22 Nov 2026 10:00:30 GMT", now=now) == 30
    assert tally.parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now=now) == 0
    assert tally.parse_retry_after("soon") is None and tally.parse_retry_after(None) is None
