"""The client against `sdk-spec/sdk-behaviour.json`, the table every Tally SDK follows: its
defaults, the batch caps and what triggers a batch, the queue bound, the backoff, the give-up
rule, what each kind of answer leads to, and what `stats()` counts."""

import dataclasses
import gzip
import inspect
import json
import time

import pytest

import tally
from conftest import REPO
from fakes import Reply

SPEC = json.loads((REPO / "sdk-spec" / "sdk-behaviour.json").read_text())
SETTINGS = {setting["name"]: setting for setting in SPEC["settings"]}
FIXED = {"retry_multiplier", "retry_jitter"}  # no option: test_backoff_follows_the_table checks them


def value(name):
    """A setting's value in the unit this SDK's option takes."""
    setting = SETTINGS[name]
    number, unit, target = setting["value"], setting["unit"], setting["python"]["unit"]
    if number is None or unit == target:
        return number
    if (unit, target) == ("s", "ms"):
        return number * 1000
    if (unit, target) == ("attempts", "retries"):
        return number - 1
    raise AssertionError(f"{name}: no conversion from {unit} to {target}")


def event(i=0, **extra):
    return tally.Custom(session_id="s-1", account_id="acct-1", attributes={"i": i}, **extra)


def test_every_default_is_the_tables():
    parameters = inspect.signature(tally.Tally).parameters
    client = tally.Tally(api_key="k", flush_at_exit=False, handle_signals=False)
    for setting in SPEC["settings"]:
        option = setting["python"]["option"]
        if option is None:
            assert setting["name"] in FIXED, f"{setting['name']} is fixed, and no test here checks it"
            continue
        assert option in parameters, f"{setting['name']}: Tally has no option {option}"
        assert parameters[option].default == value(setting["name"]), option
        assert getattr(client, option) == value(setting["name"]), option
    assert value("max_batch_events") <= SPEC["server_limits"]["max_batch_events"]
    assert value("max_batch_bytes") <= SPEC["server_limits"]["max_body_bytes"]


def test_backoff_follows_the_table():
    first, cap = value("retry_initial_delay"), value("retry_max_delay")
    factor, jitter, longest = value("retry_multiplier"), value("retry_jitter"), value("max_retry_after")

    def delay(attempt, rng, retry_after=None):
        return tally.backoff_delay(attempt, first, cap, retry_after, longest, rng=lambda: rng)

    assert delay(1, 1.0) == first
    assert delay(1, 0.0) == pytest.approx(first * (1 - jitter))
    assert delay(2, 1.0) == pytest.approx(first * factor)
    assert delay(3, 1.0) == pytest.approx(first * factor ** 2)
    assert delay(60, 1.0) == cap
    assert delay(60, 0.0) == pytest.approx(cap * (1 - jitter))
    assert delay(1, 0.0, retry_after=first * 3) == first * 3  # Retry-After is a floor
    assert delay(1, 0.0, retry_after=longest * 10) == longest


def test_a_batch_goes_once_flush_at_events_wait_and_holds_at_most_max_batch_events(memory, make_client):
    size = value("max_batch_events")
    client = make_client(transport=memory, flush_interval=60)
    for i in range(2 * size + 7):
        client.record(event(i))
    deadline = time.monotonic() + 10
    while len(memory.events()) < 2 * value("flush_at") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(memory.events()) >= 2 * value("flush_at"), "full batches went without waiting for the interval"
    assert client.flush(10)
    assert [len(r.events) for r in memory.requests] == [size, size, 7]


def test_a_batch_body_stays_within_max_batch_bytes_and_a_full_one_goes_at_once(fake, make_client):
    cap = value("max_batch_bytes")
    client = make_client(endpoint=fake.url, flush_interval=60)
    for i in range(45):
        client.record(event(i, content="x" * 200_000))
    fake.wait_for(lambda requests: len(requests) >= 1)  # full by its bytes: no flush asked yet
    assert client.flush(30)
    batches = fake.batches()
    bodies = [gzip.decompress(b.raw) if b.headers.get("content-encoding") == "gzip" else b.raw for b in batches]
    assert len(bodies) >= 3
    for body, later in zip(bodies, batches[1:] + [None]):
        assert len(body) <= cap
        if later is not None:
            following = json.dumps(later.events[0], separators=(",", ":"), ensure_ascii=False).encode()
            assert len(body) + 1 + len(following) > cap, "the batch was full: its next event did not fit"
    assert len(fake.events()) == 45


def test_max_batch_bytes_counts_the_whole_body_to_the_byte(memory, make_client):
    probe = make_client(transport=memory, gzip_min_bytes=None)
    for i in range(3):
        probe.record(event(i))
    assert probe.flush(5)
    (request,) = memory.requests
    three = len(request.raw)  # events of equal size: the envelope, three events, two commas
    for cap, sizes in ((three, [3, 3, 3]), (three - 1, [2, 2, 2, 2, 1])):
        memory.requests.clear()
        client = make_client(transport=memory, gzip_min_bytes=None, max_batch_bytes=cap, flush_interval=60)
        for i in range(9):
            client.record(event(i))
        assert client.flush(5)
        assert [len(r.events) for r in memory.requests] == sizes, cap
        assert max(len(r.raw) for r in memory.requests) <= cap


def test_the_queue_holds_max_queue_events_and_drops_the_rest(fake, make_client):
    fake.default = lambda r: Reply(200, body={"accepted": len(r.events), "rejected": []}, action="hang")
    client = make_client(endpoint=fake.url, flush_interval=60, request_timeout=60)
    for i in range(value("flush_at")):
        client.record(event(i))
    fake.wait_for(lambda requests: len(requests) == 1)  # a full batch in flight, held by the server
    bound = value("max_queue_events")
    kept = [client.record(event(i)) for i in range(bound + 5)]
    assert kept.count(True) == bound and kept[bound:] == [False] * 5
    assert client.stats().dropped == 5
    fake.release()
    assert client.flush(30)


def test_no_attempt_limit_unless_the_table_sets_one(fake, make_client):
    limit = SETTINGS["max_attempts"]["value"]
    failures = 15 if limit is None else limit
    for _ in range(failures):
        fake.script.append(Reply(503, body={"error": {"code": "unavailable", "message": "m"}}))
    errors = []
    client = make_client(endpoint=fake.url, backoff_base=0.002, backoff_max=0.01, on_error=errors.append)
    client.record(event())
    assert client.flush(20)
    if limit is None:
        assert (client.stats().accepted, len(fake.batches()), errors) == (1, failures + 1, [])
    else:
        assert (client.stats().failed, len(fake.batches()), len(errors)) == (1, limit, 1)


def test_a_batch_is_given_up_when_its_next_attempt_would_start_past_max_retry_elapsed(fake, make_client):
    fake.default = lambda r: Reply(503, {"Retry-After": "1"}, {"error": {"code": "unavailable", "message": "m"}})
    errors = []
    client = make_client(endpoint=fake.url, max_retry_elapsed=1.5, on_error=errors.append)
    client.record(event())
    started = time.monotonic()
    assert client.flush(10)
    # Attempts at 0 s and 1 s (Retry-After); a third would start at 2 s, past 1.5 s.
    assert len(fake.batches()) == 2
    assert 1.0 <= time.monotonic() - started < 1.5
    (error,) = errors
    assert (error.status, error.retryable) == (503, True)
    stats = client.stats()
    assert (stats.failed, stats.retries, stats.batches) == (1, 1, 2)


STATUSES = {"2xx": [200], "429": [429], "5xx": [500, 502, 503], "no_answer": ["drop"], "413": [413],
            "4xx": [400, 401, 403, 404, 415]}


def test_every_kind_of_answer_in_the_table_is_tried():
    assert sorted(STATUSES) == sorted(a["answer"] for a in SPEC["answers"])


@pytest.mark.parametrize("answer, outcome, status", [
    (a["answer"], a["outcome"], status) for a in SPEC["answers"] for status in STATUSES.get(a["answer"], [])])
def test_each_answer_leads_to_the_tables_outcome(fake, make_client, answer, outcome, status):
    def reply(request):
        if status == "drop":
            return Reply(action="drop")
        if status == 413 and len(request.events) <= 2:
            return Reply(200, body={"accepted": len(request.events), "rejected": []})
        return Reply(status, body={"accepted": len(request.events), "rejected": []} if status == 200
                     else {"error": {"code": "some_code", "message": "m"}})

    fake.script.append(reply)
    if status == 413:
        fake.default = reply
    errors = []
    client = make_client(endpoint=fake.url, flush_at=4, on_error=errors.append)
    for i in range(4):
        client.record(event(i))
    assert client.flush(10)
    stats = client.stats()
    sizes = [len(b.events) for b in fake.batches()]
    expected = {
        "delivered": ([4], 4, 0, 0),
        "retry": ([4, 4], 4, 0, 1),
        "split": ([4, 2, 2], 4, 0, 0),
        "give_up": ([4], 0, 4, 0),
    }[outcome]
    assert (sizes, stats.accepted, stats.failed, stats.retries) == expected
    assert len(errors) == (1 if outcome == "give_up" else 0)


def test_stats_has_the_tables_counters_and_every_record_ends_in_one(fake, make_client):
    counters = SPEC["stats"]["counters"]
    assert sorted(f.name for f in dataclasses.fields(tally.Stats)) == sorted(n for c in counters for n in c["python"])

    def reject_second(request):
        return Reply(200, body={"accepted": 1, "rejected": [{"index": 1, "event_id": request.event_ids[1],
                                                             "code": "too_long", "field": "account_id",
                                                             "message": "m"}]})

    fake.script.extend([reject_second, Reply(400, body={"error": {"code": "invalid_batch", "message": "m"}})])
    client = make_client(endpoint=fake.url, flush_at=2, max_batch_events=2, flush_interval=60)
    returned = 0
    for i in range(4):
        client.record(event(i))
        returned += 1
    assert client.close(10)
    assert not client.record(event(4))
    returned += 1
    stats = dataclasses.asdict(client.stats())
    counted = {c["name"]: sum(stats[n] for n in c["python"]) for c in counters}
    assert counted == {"enqueued": 4, "accepted": 1, "rejected": 1, "dropped": 1, "failed": 2, "pending": 0,
                       "requests": 2, "retries": 0}
    assert returned == sum(counted[n] for n in ("accepted", "rejected", "dropped", "failed", "pending"))
