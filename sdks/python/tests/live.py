"""The real Tally for the SDK's live tests: `tally-ingest` and `tally-aggregator` started by
`tally-devstack` (through `tests/python/services.py`) on private topics, database and keys;
ingest has a plan of its own for the quota tests."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List

from conftest import REPO

sys.path.insert(0, str(REPO / "tests" / "python"))
import services  # noqa: E402

QUOTA_PLAN = {
    "limits": {"tokens_per_request": 500, "requests_per_minute": 10_000, "tokens_per_minute": 10_000_000,
               "allowed_models": ["gpt-4o", "claude-sonnet-4"]},
    "upgradable": True,
}


def start(**options: Any) -> services.Services:
    quota = {"plans": {"sdk": QUOTA_PLAN}, "default_plan": "sdk", "reserved_operations": {"bulk_export": ["enterprise"]}}
    return services.Services(aggregator=True, ingest_config={"quota": quota}, **options).start()


def stop(stack: services.Services) -> None:
    stack.stop()


def poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float, what: str) -> Any:
    """Calls `read` until `done(answer)` holds; fails with the last answer after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        answer = read()
        if done(answer):
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached in {timeout} s; last answer: {answer!r}"[:2000])
        time.sleep(0.2)


def timeline(stack: services.Services, session_id: str, key: str) -> Dict[str, Any]:
    """The whole timeline: every page joined (a page holds at most 1,000 events)."""
    events: List[Any] = []
    cursor = None
    while True:
        path = f"/v1/sessions/{session_id}/timeline" + (f"?cursor={cursor}" if cursor else "")
        answer = stack.request("GET", path, key=key)
        if answer.status != 200:
            return {"status": answer.status, "events": events}
        page = answer.json()
        events.extend(page["events"])
        cursor = page.get("next_cursor")
        if not cursor:
            page["events"] = events
            return page
