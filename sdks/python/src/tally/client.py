"""The client: its settings, recording and flushing events, closing, counters, the quota
check, and the entry points of metering. Delivery itself (the queue and the background
thread sending it) is in `tally.delivery`."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from . import _exit
from ._api import SDK_NAME, SDK_VERSION, _error_of
from .delivery import DeliveryError, Rejection, _Delivery, _Item, backoff_delay, parse_retry_after
from .events import Event
from .quota import QuotaResult
from .transport import Transport, TransportError, UrllibTransport

__all__ = ["Tally", "Rejection", "DeliveryError", "Stats", "backoff_delay", "parse_retry_after"]

log = logging.getLogger("tally")

DEFAULT_ENDPOINT = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class Stats:
    """Counters since the client started, in events (`batches` and `retries` in requests).
    Every `record()` that returns ends in one of accepted, rejected, dropped, failed or pending."""

    queued: int  # taken into the queue
    accepted: int  # accepted by the server
    rejected: int  # refused one by one by the server (`on_rejected`)
    dropped: int  # not taken: queue full, or the client closed
    failed: int  # taken but not delivered: batch refused, given up, or left at close
    pending: int  # taken and not settled yet: waiting or in flight
    batches: int  # POST /v1/batch requests, retries and split halves included
    retries: int  # attempts that failed and were followed by another


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


class Tally(_Delivery):
    """A Tally client. Thread-safe; make one per process and share it.

    Events go into a bounded in-memory queue and are sent by a background thread in batches
    of up to `max_batch_events` events and `max_batch_bytes` bytes: as soon as a full batch
    waits (`flush_at` events or `max_batch_bytes`), else once the oldest event has waited
    `flush_interval` seconds. Bodies of `gzip_min_bytes` or more are gzipped. Network errors,
    5xx and 429 are retried with exponential backoff and jitter (honouring `Retry-After`),
    resending the same events with the same ids, which the server deduplicates, until the
    next attempt would start more than `max_retry_elapsed` seconds after the first; 413
    splits the batch in halves; other 4xx are not retried. Events the server rejects one by
    one go to `on_rejected`; batches that cannot be delivered go to `on_error`. When the
    queue is full new events are dropped and counted (`stats().dropped`); recording never
    blocks and never waits on the network.

    At exit (normal interpreter exit, and SIGTERM unless `handle_signals=False`) the queue is
    flushed for at most `exit_timeout` seconds.

    The defaults are the table of `sdk-spec/sdk-behaviour.json`, shared by every Tally SDK.

    Args:
      api_key: the project's ingest key (default `$TALLY_API_KEY`).
      endpoint: ingest's base URL (default `$TALLY_ENDPOINT`, else http://127.0.0.1:8080).
      flush_at: send as soon as this many events wait.
      flush_interval: send what has waited this many seconds.
      max_queue_size: events held at most; beyond it new events are dropped.
      max_queue_bytes: bytes of serialized events held at most; beyond it new events are dropped.
      max_batch_events: events per request at most (the server takes up to 1000).
      max_batch_bytes: bytes of a request's JSON body before compression, envelope included
        (the server takes 5 MiB); one larger event still goes alone.
      gzip_min_bytes: bodies this large or larger are gzipped; None never gzips.
      request_timeout: seconds per delivery request.
      max_retries: retries of one batch before it is given up (then `on_error`); None: no limit.
      max_retry_elapsed: no retry of a batch starts later than this many seconds after its
        first attempt; the batch is given up instead.
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
        flush_at: int = 500,
        flush_interval: float = 1.0,
        max_queue_size: int = 10_000,
        max_queue_bytes: int = 32 * 1024 * 1024,
        max_batch_events: int = 500,
        max_batch_bytes: int = 4 * 1024 * 1024,
        gzip_min_bytes: Optional[int] = 1024,
        request_timeout: float = 10.0,
        max_retries: Optional[int] = None,
        max_retry_elapsed: float = 300.0,
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
                            ("max_queue_bytes", max_queue_bytes), ("max_batch_events", max_batch_events),
                            ("max_batch_bytes", max_batch_bytes)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int")
        if max_retries is not None and max_retries < 0:
            raise ValueError("max_retries must not be negative")
        self.api_key = api_key or ""
        self.endpoint = (endpoint or os.environ.get("TALLY_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")
        self.flush_at = flush_at
        self.flush_interval = flush_interval
        self.max_queue_size = max_queue_size
        self.max_queue_bytes = max_queue_bytes
        self.max_batch_events = max_batch_events
        self.max_batch_bytes = max_batch_bytes
        self.gzip_min_bytes = gzip_min_bytes
        self.request_timeout = request_timeout
        self.max_retries = max_retries
        self.max_retry_elapsed = max_retry_elapsed
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
            if (len(self._queue) >= self.max_queue_size
                    or self._queued_bytes + len(payload) > self.max_queue_bytes):
                self._dropped += 1
                if self._logs.ready("full"):
                    log.warning("tally: queue full (%d events, %d bytes); new events are dropped (%d so far)",
                                len(self._queue), self._queued_bytes, self._dropped)
                return False
            self._queue.append(_Item(event.event_id, payload, time.monotonic()))
            self._queued_bytes += len(payload)
            self._enqueued += 1
            self._ensure_worker()
            if self._full_batch_waits_locked():
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
                self._queued_bytes = 0
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
