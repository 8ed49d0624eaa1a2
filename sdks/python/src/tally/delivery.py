"""Delivery of recorded events: the client's bounded queue, the background thread that sends
it in batches (retried with backoff, split when the server finds a batch too large), and the
outcomes it reports (`Rejection`, `DeliveryError`)."""

from __future__ import annotations

import collections
import email.utils
import gzip
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence, Tuple

from ._api import SDK_NAME, SDK_VERSION, _error_of
from ._time import format_rfc3339, utc_now
from .transport import HttpResponse, Transport, TransportError

__all__ = ["Rejection", "DeliveryError", "backoff_delay", "parse_retry_after"]

log = logging.getLogger("tally")


@dataclass(frozen=True)
class Rejection:
    """One event the server refused (its answer's `rejected[]`), with the event itself."""

    index: int
    event_id: Optional[str]
    code: str
    field: Optional[str]
    message: str
    event: Optional[Dict[str, Any]] = None


@dataclass(frozen=True)
class DeliveryError:
    """A batch that will not be delivered: refused as a whole (401, 403, 400, 413, 415, ...)
    or still failing after every retry. `status` is None when there was no HTTP answer."""

    status: Optional[int]
    code: Optional[str]
    message: str
    event_ids: Tuple[str, ...]
    retryable: bool


def backoff_delay(attempt: int, base: float, cap: float, retry_after: Optional[float] = None,
                  max_retry_after: float = 300.0, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number `attempt` (1 for the first retry).

    Exponential with jitter: half of min(cap, base * 2**(attempt-1)) plus a random part of
    up to the other half, so clients that failed together do not come back together. A
    `Retry-After` from the server is a floor (up to `max_retry_after`).
    """
    ceiling = min(cap, base * (2 ** (attempt - 1)))
    delay = ceiling / 2 + rng() * ceiling / 2
    if retry_after is not None:
        delay = max(delay, min(retry_after, max_retry_after))
    return delay


def parse_retry_after(value: Optional[str], now: Optional[datetime] = None) -> Optional[float]:
    """Seconds from a `Retry-After` header: delay-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - (now or utc_now())).total_seconds())


class _Item:
    __slots__ = ("event_id", "payload", "enqueued_at")

    def __init__(self, event_id: str, payload: bytes, enqueued_at: float):
        self.event_id, self.payload, self.enqueued_at = event_id, payload, enqueued_at


class _Delivery:
    """The client's queue and the worker thread that drains it. A mixin of `Tally`, whose
    `__init__` sets the attributes declared here and then calls `_init_state`."""

    api_key: str
    endpoint: str
    flush_at: int
    flush_interval: float
    max_queue_bytes: int
    max_batch_events: int
    max_batch_bytes: int
    gzip_min_bytes: Optional[int]
    request_timeout: float
    max_retries: Optional[int]
    max_retry_elapsed: float
    backoff_base: float
    backoff_max: float
    max_retry_after: float
    on_rejected: Optional[Callable[[List[Rejection]], Any]]
    on_error: Optional[Callable[[DeliveryError], Any]]
    transport: Transport
    _sdk: bytes
    _rng: random.Random
    _logs: Any

    # ----- state -----

    def _init_state(self) -> None:
        # One re-entrant lock guards everything: a SIGTERM handler runs close() on the main
        # thread, possibly while that thread is inside record(); Condition.wait releases every
        # level of the lock, so the worker can still take it and send.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._queue: Deque[_Item] = collections.deque()
        self._queued_bytes = 0  # of the events' JSON in the queue, the batch in flight not included
        self._thread: Optional[threading.Thread] = None
        self._pid = os.getpid()
        self._abort = threading.Event()
        self._closing = False
        self._close_deadline: Optional[float] = None
        self._worker_done = False
        self._enqueued = 0
        self._settled = 0
        self._flush_target = 0
        self._accepted = 0
        self._rejected = 0
        self._dropped = 0
        self._failed = 0
        self._batches = 0
        self._retries = 0

    def _after_fork_in_child(self) -> None:
        """A forked child has the parent's queue but not its thread; the parent sends those
        events, so the child starts empty with its own worker."""
        self._init_state()

    def _ensure_worker(self) -> None:
        if self._pid != os.getpid():
            self._after_fork_in_child()
        if self._thread is None and not self._closing:
            self._thread = threading.Thread(target=self._run, name="tally-delivery", daemon=True)
            self._thread.start()

    # ----- the background worker -----

    def _run(self) -> None:
        while True:
            with self._cond:
                items = self._next_batch_locked()
                if items is None:
                    self._worker_done = True
                    self._cond.notify_all()
                    return
            try:
                self._deliver(items)
            except Exception:  # never let the worker die with events in the queue
                log.exception("tally: unexpected error while delivering %d events", len(items))
                with self._lock:
                    self._failed += len(items)
            with self._cond:
                self._settled += len(items)
                self._cond.notify_all()

    def _next_batch_locked(self) -> Optional[List[_Item]]:
        while True:
            if self._abort.is_set():
                return None
            if self._queue:
                age = time.monotonic() - self._queue[0].enqueued_at
                if (self._closing or self._settled < self._flush_target or self._full_batch_waits_locked()
                        or age >= self.flush_interval):
                    return self._take_locked()
                self._cond.wait(self.flush_interval - age)
            elif self._closing:
                return None
            else:
                self._cond.wait()

    def _envelope_bytes(self) -> int:
        """The body's bytes around its events: `{"batch":[`, `],"sent_at":"…","sdk":…}`."""
        return len(b'{"batch":[],"sent_at":"","sdk":}') + len("2026-11-22T10:00:00.000Z") + len(self._sdk)

    def _full_batch_waits_locked(self) -> bool:
        if len(self._queue) >= self.flush_at:
            return True
        body = self._envelope_bytes() + self._queued_bytes + max(0, len(self._queue) - 1)
        return body >= self.max_batch_bytes

    def _take_locked(self) -> List[_Item]:
        """The next batch: at most `max_batch_events` events and a body of at most
        `max_batch_bytes` before compression, but at least one event."""
        items: List[_Item] = []
        size = self._envelope_bytes()
        while self._queue and len(items) < self.max_batch_events:
            added = len(self._queue[0].payload) + (1 if items else 0)  # the comma before it
            if items and size + added > self.max_batch_bytes:
                break
            item = self._queue.popleft()
            items.append(item)
            size += added
            self._queued_bytes -= len(item.payload)
        return items

    def _deliver(self, items: List[_Item]) -> None:
        work = [items]
        while work:
            part = work.pop(0)
            if self._send(part) == "split":
                middle = len(part) // 2
                work[0:0] = [part[:middle], part[middle:]]

    def _request(self, items: Sequence[_Item]) -> Tuple[bytes, Dict[str, str]]:
        body = b"".join((
            b'{"batch":[', b",".join(item.payload for item in items), b'],"sent_at":"',
            format_rfc3339(utc_now()).encode(), b'","sdk":', self._sdk, b"}",
        ))
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}",
                   "User-Agent": f"{SDK_NAME}/{SDK_VERSION}"}
        if self.gzip_min_bytes is not None and len(body) >= self.gzip_min_bytes:
            body = gzip.compress(body, compresslevel=6)
            headers["Content-Encoding"] = "gzip"
        return body, headers

    def _timeout(self) -> float:
        deadline = self._close_deadline
        if deadline is None:
            return self.request_timeout
        return max(0.05, min(self.request_timeout, deadline - time.monotonic()))

    def _send(self, items: List[_Item]) -> str:
        """Delivers one batch, retrying as needed. Returns "done" or "split" (the server
        found it too large: send it in halves)."""
        attempt = 0
        first_attempt_at = time.monotonic()
        while True:
            if self._abort.is_set():
                self._give_up(items, None, None, "the client was closed before the batch was delivered", True)
                return "done"
            body, headers = self._request(items)
            retry_after: Optional[float] = None
            with self._lock:
                self._batches += 1
            try:
                answer: Optional[HttpResponse] = self.transport.send(
                    "POST", self.endpoint + "/v1/batch", body, headers, self._timeout())
            except TransportError as err:
                answer, problem = None, str(err)
            except Exception as err:  # a custom transport's own failure: treat as no answer
                answer, problem = None, repr(err)
            if answer is not None:
                if 200 <= answer.status < 300:
                    self._accept(items, answer)
                    return "done"
                code, message = _error_of(answer)
                problem = f"HTTP {answer.status} {code or ''}: {message or ''}"
                if answer.status == 413 and len(items) > 1:
                    log.info("tally: batch of %d events too large for the server; sending it in halves", len(items))
                    return "split"
                if answer.status != 429 and answer.status < 500:
                    self._give_up(items, answer.status, code, problem, False)
                    return "done"
                retry_after = parse_retry_after(answer.header("retry-after"))
            attempt += 1
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_max, retry_after,
                                  self.max_retry_after, self._rng.random)
            out_of_attempts = self.max_retries is not None and attempt > self.max_retries
            out_of_time = time.monotonic() - first_attempt_at + delay > self.max_retry_elapsed
            if out_of_attempts or out_of_time:
                self._give_up(items, answer.status if answer else None, _error_of(answer)[0] if answer else None,
                              f"gave up after {attempt} attempts: {problem}", True)
                return "done"
            with self._lock:
                self._retries += 1
            if self._logs.ready("retry"):
                log.warning("tally: delivery of %d events failed (%s); retrying in %.2f s", len(items), problem, delay)
            if self._abort.wait(delay):
                continue  # closed meanwhile: the loop gives up

    def _accept(self, items: List[_Item], answer: HttpResponse) -> None:
        try:
            result = json.loads(answer.body)
            accepted = int(result.get("accepted", 0))
            rejected_json = result.get("rejected") or []
        except (ValueError, AttributeError, TypeError):
            log.warning("tally: unreadable answer to a batch (HTTP %d); counting it as accepted", answer.status)
            accepted, rejected_json = len(items), []
        rejections: List[Rejection] = []
        for entry in rejected_json:
            if not isinstance(entry, dict):
                continue
            index = entry.get("index")
            event = None
            if isinstance(index, int) and 0 <= index < len(items):
                event = json.loads(items[index].payload)
            rejections.append(Rejection(
                index=index if isinstance(index, int) else -1,
                event_id=entry.get("event_id"),
                code=str(entry.get("code")),
                field=entry.get("field"),
                message=str(entry.get("message", "")),
                event=event,
            ))
        with self._lock:
            self._accepted += accepted
            self._rejected += len(rejections)
        if rejections:
            if self._logs.ready("rejected"):
                log.warning("tally: the server rejected %d of %d events: %s", len(rejections), len(items),
                            "; ".join(f"{r.event_id} {r.code} {r.field or ''}: {r.message}" for r in rejections[:5]))
            if self.on_rejected is not None:
                try:
                    self.on_rejected(rejections)
                except Exception:
                    log.exception("tally: on_rejected callback failed")

    def _give_up(self, items: List[_Item], status: Optional[int], code: Optional[str], message: str,
                 retryable: bool) -> None:
        with self._lock:
            self._failed += len(items)
        log.error("tally: %d events not delivered: %s", len(items), message)
        if self.on_error is not None:
            error = DeliveryError(status, code, message, tuple(i.event_id for i in items), retryable)
            try:
                self.on_error(error)
            except Exception:
                log.exception("tally: on_error callback failed")
