"""The client: a bounded queue of events, a background thread that sends them in batches with
retries, and the quota check."""

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

from . import _exit
from ._time import format_rfc3339, utc_now
from .events import Event
from .quota import QuotaResult
from .transport import HttpResponse, Transport, TransportError, UrllibTransport

__all__ = ["Tally", "Rejection", "DeliveryError", "Stats", "backoff_delay", "parse_retry_after"]

log = logging.getLogger("tally")

SDK_NAME = "tally-py"
SDK_VERSION = "0.1.0"
DEFAULT_ENDPOINT = "http://127.0.0.1:8080"


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


@dataclass(frozen=True)
class Stats:
    """Counters since the client started, in events (`batches` and `retries` in requests)."""

    queued: int
    accepted: int
    rejected: int
    dropped: int
    failed: int
    pending: int
    batches: int
    retries: int


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


class _LogLimiter:
    """At most one log line per key per interval."""

    def __init__(self, interval: float = 60.0):
        self._interval, self._last = interval, {}  # type: float, Dict[str, float]

    def ready(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -self._interval) >= self._interval:
            self._last[key] = now
            return True
        return False


class Tally:
    """A Tally client. Thread-safe; make one per process and share it.

    Events go into a bounded in-memory queue and are sent by a background thread in batches
    of up to `flush_at` events, or whatever has waited `flush_interval` seconds. Bodies of
    `gzip_min_bytes` or more are gzipped. Network errors, 5xx and 429 are retried with
    exponential backoff and jitter (honouring `Retry-After`), resending the same events with
    the same ids, which the server deduplicates; other 4xx are not retried. Events the
    server rejects one by one go to `on_rejected`; batches that cannot be delivered go to
    `on_error`. When the queue is full new events are dropped and counted (`stats().dropped`);
    recording never blocks and never waits on the network.

    At exit (normal interpreter exit, and SIGTERM unless `handle_signals=False`) the queue is
    flushed for at most `exit_timeout` seconds.

    Args:
      api_key: the project's ingest key (default `$TALLY_API_KEY`).
      endpoint: ingest's base URL (default `$TALLY_ENDPOINT`, else http://127.0.0.1:8080).
      flush_at: send as soon as this many events wait.
      flush_interval: send what has waited this many seconds.
      max_queue_size: events held at most; beyond it new events are dropped.
      max_batch_events: events per request at most (the server takes up to 1000).
      max_batch_bytes: uncompressed bytes per request at most (one larger event still goes alone).
      gzip_min_bytes: bodies this large or larger are gzipped; None never gzips.
      request_timeout: seconds per delivery request.
      max_retries: retries of one batch before it is given up (then `on_error`).
      backoff_base, backoff_max: the backoff's first step and ceiling, in seconds.
      max_retry_after: the longest `Retry-After` honoured, in seconds.
      quota_timeout: seconds a quota check may take before the fallback decides.
      quota_fail_open: when Tally cannot answer a quota check, allow (True) or refuse (False).
      on_rejected: called with a list of `Rejection`s for events the server refused.
      on_error: called with a `DeliveryError` for each batch given up.
      transport: the HTTP implementation (default urllib).
      flush_at_exit, handle_signals, exit_timeout: the flush at process exit.
      capture_stack: put the traceback in the `error.stack` of events recorded for exceptions.
      enabled: False makes every call a no-op (events are neither queued nor sent).
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        *,
        endpoint: Optional[str] = None,
        flush_at: int = 100,
        flush_interval: float = 1.0,
        max_queue_size: int = 10_000,
        max_batch_events: int = 500,
        max_batch_bytes: int = 1_000_000,
        gzip_min_bytes: Optional[int] = 1024,
        request_timeout: float = 10.0,
        max_retries: int = 10,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 300.0,
        quota_timeout: float = 1.0,
        quota_fail_open: bool = True,
        on_rejected: Optional[Callable[[List[Rejection]], Any]] = None,
        on_error: Optional[Callable[[DeliveryError], Any]] = None,
        transport: Optional[Transport] = None,
        flush_at_exit: bool = True,
        handle_signals: bool = True,
        exit_timeout: float = 5.0,
        capture_stack: bool = True,
        enabled: bool = True,
    ):
        api_key = api_key if api_key is not None else os.environ.get("TALLY_API_KEY")
        if enabled and not api_key:
            raise ValueError("an API key is required (pass api_key= or set TALLY_API_KEY)")
        for name, value in (("flush_at", flush_at), ("max_queue_size", max_queue_size),
                            ("max_batch_events", max_batch_events), ("max_batch_bytes", max_batch_bytes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int")
        if max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self.api_key = api_key or ""
        self.endpoint = (endpoint or os.environ.get("TALLY_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.max_queue_size = max_queue_size
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.gzip_min_bytes = gzip_min_bytes
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.quota_timeout = quota_timeout
        self.quota_fail_open = quota_fail_open
        self.on_rejected = on_rejected
        self.on_error = on_error
        self.exit_timeout = exit_timeout
        self.capture_stack = capture_stack
        self.enabled = enabled
        self.transport: Transport = transport or UrllibTransport()
        self._sdk = json.dumps({"name": SDK_NAME, "version": SDK_VERSION}, separators=(",", ":")).encode()
        self._rng = random.Random()
        self._logs = _LogLimiter()
        self._init_state()
        if enabled and flush_at_exit:
            _exit.register(self, handle_signals)

    # ----- state -----

    def _init_state(self) -> None:
        # One re-entrant lock guards everything: a SIGTERM handler runs close() on the main
        # thread, possibly while that thread is inside record(); Condition.wait releases every
        # level of the lock, so the worker can still take it and send.
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._queue: Deque[_Item] = collections.deque()
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

    # ----- public API -----

    def record(self, event: Event) -> bool:
        """Queues an event for delivery. Returns False if it was dropped (queue full, client
        closed or disabled). Raises TypeError/ValueError if the event cannot be encoded as
        JSON (e.g. `content` holding an object json cannot write)."""
        if not self.enabled:
            return False
        if not isinstance(event, Event):
            raise TypeError(f"record() takes an Event, not {type(event).__name__}")
        payload = json.dumps(event.to_wire(), separators=(",", ":"), ensure_ascii=False,
                             allow_nan=False).encode("utf-8")
        with self._cond:
            if self._pid != os.getpid():
                self._after_fork_in_child()
            if self._closing:
                self._dropped += 1
                if self._logs.ready("closed"):
                    log.warning("tally: event recorded after close() was dropped")
                return False
            if len(self._queue) >= self.max_queue_size:
                self._dropped += 1
                if self._logs.ready("full"):
                    log.warning("tally: queue full (%d events); new events are dropped (%d so far)",
                                self.max_queue_size, self._dropped)
                return False
            self._queue.append(_Item(event.event_id, payload, time.monotonic()))
            self._enqueued += 1
            self._ensure_worker()
            if len(self._queue) >= self.flush_at:
                self._cond.notify_all()
        return True

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Sends everything recorded so far and waits until it is settled (accepted, rejected
        or given up), at most `timeout` seconds. Returns False if the time ran out."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            target = self._enqueued
            if self._settled >= target:
                return True
            self._flush_target = max(self._flush_target, target)
            self._ensure_worker()
            self._cond.notify_all()
            while self._settled < target and not self._worker_done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            return self._settled >= target

    def close(self, timeout: Optional[float] = None) -> bool:
        """Flushes and stops the background thread, waiting at most `timeout` seconds
        (including retries). Events not delivered by then are given up and counted as failed.
        Returns True if it finished in time without giving anything up. Later records are
        dropped."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._pid != os.getpid():
                self._after_fork_in_child()
            self._closing = True
            if deadline is not None:
                self._close_deadline = deadline if self._close_deadline is None else min(deadline, self._close_deadline)
            self._cond.notify_all()
            if self._thread is None:
                self._worker_done = True
            while not self._worker_done:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            if not self._worker_done:
                # The worker gives up its batch at its next step: at once when it waits to
                # retry; a request in flight has a timeout cut to the deadline.
                self._abort.set()
                grace = time.monotonic() + 0.5
                while not self._worker_done and time.monotonic() < grace:
                    self._cond.wait(grace - time.monotonic())
            lost = len(self._queue)
            if lost:
                self._queue.clear()
                self._failed += lost
                self._settled += lost
                log.warning("tally: %d events were not delivered before close() timed out", lost)
            clean = self._worker_done and not lost and not self._abort.is_set()
        _exit.unregister(self)
        return clean

    def __enter__(self) -> "Tally":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(self.exit_timeout)

    def stats(self) -> Stats:
        with self._lock:
            return Stats(
                queued=self._enqueued,
                accepted=self._accepted,
                rejected=self._rejected,
                dropped=self._dropped,
                failed=self._failed,
                pending=self._enqueued - self._settled,
                batches=self._batches,
                retries=self._retries,
            )

    # ----- quota -----

    def check(
        self,
        account_id: str,
        model: Optional[str] = None,
        operation: Optional[str] = None,
        estimated_tokens: int = 0,
        estimated_cost_usd: Optional[float] = None,
        *,
        timeout: Optional[float] = None,
    ) -> QuotaResult:
        """Asks Tally whether `account_id` may make a call (`POST /v1/quota/check`).

        When Tally does not answer within `timeout` (default `quota_timeout`), or answers
        with an error, the result is decided here by `quota_fail_open` and has
        `fallback=True`. Never raises for a network problem.
        """
        if not isinstance(account_id, str) or not account_id:
            raise ValueError("account_id is required")
        if not isinstance(estimated_tokens, int) or isinstance(estimated_tokens, bool) or estimated_tokens < 0:
            raise ValueError("estimated_tokens must be a non-negative int")
        if not self.enabled:
            return QuotaResult.unavailable(True, "client disabled")
        body: Dict[str, Any] = {"account_id": account_id}
        if model:
            body["model"] = model
        if operation:
            body["operation"] = operation
        if estimated_tokens:
            body["estimated_tokens"] = estimated_tokens
        if estimated_cost_usd is not None:
            body["estimated_cost_usd"] = float(estimated_cost_usd)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}",
                   "User-Agent": f"{SDK_NAME}/{SDK_VERSION}"}
        try:
            answer = self.transport.send("POST", self.endpoint + "/v1/quota/check",
                                         json.dumps(body).encode(), headers,
                                         self.quota_timeout if timeout is None else timeout)
        except TransportError as err:
            return self._quota_fallback(f"no answer: {err}")
        except Exception as err:  # a custom transport's own failure
            return self._quota_fallback(f"transport failed: {err!r}")
        if answer.status != 200:
            code, message = _error_of(answer)
            return self._quota_fallback(f"HTTP {answer.status} {code or ''} {message or ''}".strip(),
                                        level=logging.ERROR if answer.status in (401, 403) else logging.WARNING)
        try:
            return QuotaResult.from_response(json.loads(answer.body), answer.headers)
        except ValueError as err:
            return self._quota_fallback(f"unreadable answer: {err}")

    def _quota_fallback(self, error: str, level: int = logging.WARNING) -> QuotaResult:
        if self._logs.ready("quota:" + error[:40]):
            log.log(level, "tally: quota check failed (%s); %s", error,
                    "allowing (fail-open)" if self.quota_fail_open else "refusing (fail-closed)")
        return QuotaResult.unavailable(self.quota_fail_open, error)

    # ----- metering (see tally.metering) -----

    def session(self, account_id: str, session_id: Optional[str] = None, **kwargs: Any):
        """A session (a context manager): records `session_start` on entry and `session_end`
        on exit; see `tally.metering.Session`."""
        from .metering import Session

        return Session(self, account_id=account_id, session_id=session_id, **kwargs)

    def meter(self, call: Callable[[], Any], **kwargs: Any) -> Any:
        """Runs one LLM call metered: see `tally.metering.Session.meter`. The session is
        the current one (inside `with tally.session(...)`) or given by `session_id` and
        `account_id`."""
        from .metering import _session_for

        return _session_for(self, kwargs).meter(call, **kwargs)

    async def ameter(self, call: Callable[[], Any], **kwargs: Any) -> Any:
        """`meter` for async calls (a coroutine, possibly giving an async stream)."""
        from .metering import _session_for

        return await _session_for(self, kwargs).ameter(call, **kwargs)

    def metered(self, **kwargs: Any):
        """A decorator: each call of the function is metered like `meter` with these options."""
        from .metering import metered

        return metered(self, **kwargs)

    def llm_call(self, **kwargs: Any):
        """A context manager metering the LLM call made inside it; see `Session.llm_call`."""
        from .metering import _session_for

        return _session_for(self, kwargs).llm_call(**kwargs)

    def tool(self, name: str, **kwargs: Any):
        """A context manager (or decorator) recording `tool_call` and `tool_result`; the
        session is the current one when the tool runs (or `session_id` and `account_id`)."""
        from .metering import ToolSpan

        return ToolSpan(self, name, **kwargs)

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
                if (self._closing or self._settled < self._flush_target or len(self._queue) >= self.flush_at
                        or age >= self.flush_interval):
                    return self._take_locked()
                self._cond.wait(self.flush_interval - age)
            elif self._closing:
                return None
            else:
                self._cond.wait()

    def _take_locked(self) -> List[_Item]:
        items: List[_Item] = []
        size = 0
        while self._queue and len(items) < self.max_batch_events:
            item = self._queue[0]
            if items and size + len(item.payload) + 1 > self.max_batch_bytes:
                break
            items.append(self._queue.popleft())
            size += len(item.payload) + 1
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
            if attempt > self.max_retries:
                self._give_up(items, answer.status if answer else None, _error_of(answer)[0] if answer else None,
                              f"gave up after {attempt} attempts: {problem}", True)
                return "done"
            delay = backoff_delay(attempt, self.backoff_base, self.backoff_max, retry_after,
                                  self.max_retry_after, self._rng.random)
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


def _error_of(answer: Optional[HttpResponse]) -> Tuple[Optional[str], Optional[str]]:
    """The `{"error": {"code", "message"}}` of an error answer, if it has one."""
    if answer is None:
        return None, None
    try:
        error = json.loads(answer.body).get("error") or {}
        return error.get("code"), error.get("message")
    except (ValueError, AttributeError, TypeError):
        return None, answer.body[:200].decode("utf-8", "replace") or None
