"""The quota check against a scripted server: the answer typed, unknown fields and reasons kept,
and fail-open / fail-closed when Tally cannot answer."""

import time
from datetime import datetime, timezone

import pytest

import tally
from fakes import Reply

ANSWER = {
    "allowed": True, "reason": None, "status": "warning", "plan": "pro",
    "limits": [
        {"name": "tokens_per_day", "window": "day", "unit": "tokens", "limit": 100000, "used": 80000,
         "remaining": 20000, "percent_used": 80.0, "status": "warning", "resets_at": "2026-11-23T00:00:00.000Z"},
        {"name": "requests_per_minute", "window": "minute", "limit": 60, "used": 3, "remaining": 57,
         "resets_at": "2026-11-22T10:01:00Z"},
    ],
    "requires_upgrade": False, "stale": False,
}
HEADERS = {"X-Quota-Limit": "100000", "X-Quota-Remaining": "20000", "X-Quota-Reset": "50400"}


def test_an_answer_is_typed_and_the_request_is_the_contract(fake, make_client):
    fake.script.append(Reply(200, HEADERS, ANSWER))
    client = make_client(endpoint=fake.url)
    result = client.check("acct-1", model="gpt-4o", operation="email_draft", estimated_tokens=1500,
                          estimated_cost_usd=0.01)
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v1/quota/check")
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.json == {"account_id": "acct-1", "model": "gpt-4o", "operation": "email_draft",
                            "estimated_tokens": 1500, "estimated_cost_usd": 0.01}
    assert result.allowed and result.reason is None and result.status == "warning" and result.plan == "pro"
    assert not result.fallback and not result.stale and not result.requires_upgrade
    day = result.limit("tokens_per_day")
    assert (day.window, day.limit, day.used, day.remaining) == ("day", 100000, 80000, 20000)
    assert day.resets_at == datetime(2026, 11, 23, tzinfo=timezone.utc)
    assert (day.unit, day.percent_used, day.status) == ("tokens", 80.0, "warning")
    assert [lim.name for lim in result.limits] == ["tokens_per_day", "requests_per_minute"]
    assert (result.header_limit, result.header_remaining, result.header_reset) == (100000, 20000, "50400")


def test_only_the_account_is_sent_when_nothing_else_is_known(fake, make_client):
    fake.script.append(Reply(200, {}, ANSWER))
    make_client(endpoint=fake.url).check("acct-1")
    assert fake.requests[0].json == {"account_id": "acct-1"}


def test_unknown_reasons_statuses_and_fields_pass_through(fake, make_client):
    answer = {"allowed": False, "reason": "carbon_budget_exceeded", "status": "frozen", "plan": "free",
              "limits": [{"name": "carbon", "window": "year", "limit": "12.5", "used": 13, "remaining": 0,
                          "resets_at": "someday", "unit": "kg"}, "not a limit"],
              "requires_upgrade": True, "stale": True, "upgrade_url": "https://example.invalid/upgrade"}
    fake.script.append(Reply(200, {}, answer))
    result = make_client(endpoint=fake.url).check("acct-1")
    assert not result.allowed and result.reason == "carbon_budget_exceeded" and not result.known_reason
    assert result.status == "frozen" and result.requires_upgrade and result.stale
    (limit,) = result.limits
    assert limit.limit == 12.5 and limit.resets_at is None and limit.raw["unit"] == "kg"
    assert result.raw["upgrade_url"] == "https://example.invalid/upgrade"


def test_a_known_refusal(fake, make_client):
    fake.script.append(Reply(200, {}, dict(ANSWER, allowed=False, reason="tokens_per_day_exceeded",
                                           status="exceeded", requires_upgrade=True)))
    result = make_client(endpoint=fake.url).check("acct-1", estimated_tokens=50000)
    assert not result.allowed and result.known_reason and result.reason == "tokens_per_day_exceeded"


@pytest.mark.parametrize("fail_open", [True, False])
def test_a_slow_tally_is_decided_by_the_fallback_within_the_timeout(fake, make_client, fail_open):
    fake.script.append(Reply(200, {}, ANSWER, action="hang"))
    client = make_client(endpoint=fake.url, quota_timeout=0.3, quota_fail_open=fail_open)
    started = time.monotonic()
    result = client.check("acct-1")
    assert time.monotonic() - started < 2
    assert result.fallback and result.allowed is fail_open and result.status == "unknown"
    assert result.reason == (None if fail_open else "quota_service_unavailable")
    assert result.error


@pytest.mark.parametrize("reply", [Reply(500, {}, {"error": {"code": "internal", "message": "x"}}),
                                   Reply(401, {}, {"error": {"code": "unauthorized", "message": "x"}}),
                                   Reply(404, {}, {"error": {"code": "not_found", "message": "route"}}),
                                   Reply(200, {}, b"<html>"), Reply(200, {}, {"status": "ok"}),
                                   Reply(action="drop")])
def test_error_answers_use_the_fallback(fake, make_client, reply):
    fake.script.append(reply)
    closed = make_client(endpoint=fake.url, quota_fail_open=False).check("acct-1")
    assert closed.fallback and not closed.allowed
    fake.script.append(reply)
    opened = make_client(endpoint=fake.url, quota_fail_open=True).check("acct-1")
    assert opened.fallback and opened.allowed


def test_an_unreachable_tally_uses_the_fallback(make_client):
    result = make_client(endpoint="http://127.0.0.1:9", quota_fail_open=False).check("acct-1")
    assert result.fallback and not result.allowed and "refused" in result.error.lower()


def test_bad_arguments_raise(make_client, fake):
    client = make_client(endpoint=fake.url)
    with pytest.raises(ValueError):
        client.check("")
    with pytest.raises(ValueError):
        client.check("acct-1", estimated_tokens=-1)
    assert fake.requests == []
