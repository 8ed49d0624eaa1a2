"""Sessions, metered LLM calls and tool calls.

    with tally.session(account_id="acct-1") as session:
        reply = session.meter(lambda: openai.chat.completions.create(model="gpt-4o", messages=m),
                              model="gpt-4o", provider="openai")
        with session.tool("search"):
            hits = search(query)

A metered call checks the quota first (raising QuotaExceeded when refused), records
`llm_request`, runs the call, and records `llm_response` with the duration, the token usage
read from the response (OpenAI- and Anthropic-shaped; see `tally.usage`) and, for streams,
the time to the first chunk; or, if the call raised, an `error` event. Both events of a call
share its trace id and span id. Streams (iterators, async iterators) are returned wrapped:
iterate them as usual; the response is recorded when the stream ends or is closed.

Recording never breaks the caller: a failure to record is logged, and the caller's own
result or exception goes through unchanged.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import inspect
import logging
import time
from typing import Any, Callable, Dict, Mapping, Optional, Type

from .events import (Artifact, Custom, ErrorEvent, ErrorInfo, Event, Knowledge, LlmRequest, LlmResponse,
                     SessionEnd, SessionStart, ToolCall, ToolInfo, ToolResult, Usage, UserMessage)
from .ids import new_event_id, new_span_id, new_trace_id
from .quota import QuotaExceeded, QuotaResult
from .usage import StreamAccumulator, model_from_response, usage_from_response

__all__ = ["Session", "LlmCall", "ToolSpan", "MeteredStream", "AsyncMeteredStream", "current_session", "metered"]

log = logging.getLogger("tally")

_current_session: "contextvars.ContextVar[Optional[Session]]" = contextvars.ContextVar("tally_session", default=None)
_current_span: "contextvars.ContextVar[Optional[str]]" = contextvars.ContextVar("tally_span", default=None)


def current_session() -> Optional["Session"]:
    """The session of the innermost `with tally.session(...)` around this code, if any."""
    return _current_session.get()


def _ms_since(start: float) -> int:
    return max(0, int(round((time.perf_counter() - start) * 1000)))


class Session:
    """A conversation (or job) of one account. As a context manager it records
    `session_start` on entry and `session_end` on exit (status `error` if an exception
    left the block) and becomes the current session for the metering helpers.

    Every event it records carries its `session_id`, `account_id`, `trace_id` and, unless
    overridden, its `operation` and `attributes`.
    """

    def __init__(self, client: Any, account_id: str, session_id: Optional[str] = None, *,
                 operation: Optional[str] = None, trace_id: Optional[str] = None,
                 attributes: Optional[Mapping[str, Any]] = None, content: Any = None):
        if not isinstance(account_id, str) or not account_id:
            raise ValueError("account_id is required")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise ValueError("session_id must be a non-empty str")
        self.client = client
        self.account_id = account_id
        self.session_id = session_id or new_event_id()
        self.operation = operation
        self.trace_id = trace_id or new_trace_id()
        self.span_id = new_span_id()
        self.attributes = dict(attributes or {})
        self.content = content
        self.started = False
        self.ended = False
        self._tokens: list = []

    # ----- lifecycle -----

    def start(self) -> "Session":
        """Records `session_start` (once)."""
        if not self.started:
            self.started = True
            self._emit(SessionStart, span_id=self.span_id, parent_span_id=None, content=self.content)
        return self

    def end(self, status: Optional[str] = "ok", **fields: Any) -> None:
        """Records `session_end` (once)."""
        if not self.ended:
            self.ended = True
            self._emit(SessionEnd, span_id=self.span_id, parent_span_id=None, status=status, **fields)

    def __enter__(self) -> "Session":
        self.start()
        self._tokens.append((_current_session.set(self), _current_span.set(self.span_id)))
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        session_token, span_token = self._tokens.pop()
        _current_span.reset(span_token)
        _current_session.reset(session_token)
        self.end("error" if exc is not None else "ok")

    # ----- events -----

    def _parent(self) -> str:
        return (_current_span.get() if _current_session.get() is self else None) or self.span_id

    def build(self, cls: Type[Event], **fields: Any) -> Event:
        """An event of this session (not yet recorded)."""
        fields.setdefault("session_id", self.session_id)
        fields.setdefault("account_id", self.account_id)
        fields.setdefault("trace_id", self.trace_id)
        if "parent_span_id" not in fields:
            fields["parent_span_id"] = self._parent()
        if self.operation and fields.get("operation") is None:
            fields["operation"] = self.operation
        if self.attributes or fields.get("attributes"):
            fields["attributes"] = {**self.attributes, **(fields.get("attributes") or {})}
        return cls(**fields)

    def record(self, cls: Type[Event], **fields: Any) -> Event:
        """Builds an event of this session and queues it; returns it. Raises for an event
        that cannot be built (a programming error), like the event classes do."""
        event = self.build(cls, **fields)
        self.client.record(event)
        return event

    def _emit(self, cls: Type[Event], **fields: Any) -> Optional[Event]:
        """`record`, but a failure is logged rather than raised (used around the caller's
        own work, which must not fail because of metering)."""
        try:
            return self.record(cls, **fields)
        except Exception:
            log.exception("tally: could not record a %s event", getattr(cls, "type", cls))
            return None

    def user_message(self, content: Any = None, **fields: Any) -> Event:
        return self.record(UserMessage, content=content, **fields)

    def knowledge(self, content: Any = None, **fields: Any) -> Event:
        return self.record(Knowledge, content=content, **fields)

    def artifact(self, content: Any = None, **fields: Any) -> Event:
        return self.record(Artifact, content=content, **fields)

    def custom(self, content: Any = None, **fields: Any) -> Event:
        return self.record(Custom, content=content, **fields)

    def error(self, error: Any, **fields: Any) -> Event:
        """Records an `error` event from an exception, an ErrorInfo, or a message."""
        if isinstance(error, str):
            error = ErrorInfo(message=error)
        elif isinstance(error, BaseException):
            error = ErrorInfo.from_exception(error, include_stack=getattr(self.client, "capture_stack", True))
        fields.setdefault("status", "error")
        return self.record(ErrorEvent, error=error, **fields)

    # ----- quota, LLM calls, tools -----

    def check(self, model: Optional[str] = None, operation: Optional[str] = None, estimated_tokens: int = 0,
              estimated_cost_usd: Optional[float] = None) -> QuotaResult:
        return self.client.check(self.account_id, model=model, operation=operation or self.operation,
                                 estimated_tokens=estimated_tokens, estimated_cost_usd=estimated_cost_usd)

    def llm_call(self, *, model: str, provider: str, **options: Any) -> "LlmCall":
        """A context manager around one LLM call; see `LlmCall`."""
        return LlmCall(self, model=model, provider=provider, **options)

    def meter(self, call: Callable[[], Any], *, model: str, provider: str, stream: Optional[bool] = None,
              **options: Any) -> Any:
        """Runs `call()` (e.g. `lambda: client.chat.completions.create(...)`) as a metered LLM
        call and returns its result: the response, or the stream wrapped so it is metered as
        it is consumed. `stream` forces or forbids treating the result as a stream (by
        default: any iterator is one).

        Options: operation, estimated_tokens and estimated_cost_usd (for the quota check),
        check_quota (default True), content (of the request), attributes, cost_usd.
        """
        with self.llm_call(model=model, provider=provider, **options) as llm:
            result = call()
            if inspect.isawaitable(result):
                if hasattr(result, "close"):
                    result.close()
                raise TypeError("the call returned an awaitable: use ameter() for async calls")
            if stream if stream is not None else _is_stream(result):
                return llm.wrap_stream(result)
            llm.set_response(result)
            return result

    async def ameter(self, call: Callable[[], Any], *, model: str, provider: str, stream: Optional[bool] = None,
                     **options: Any) -> Any:
        """`meter` for async calls: `call()` returns an awaitable whose result is a response
        or an async stream. The quota check runs in a thread, off the event loop."""
        llm = self.llm_call(model=model, provider=provider, **options)
        quota = await asyncio.get_running_loop().run_in_executor(None, llm._check_quota)
        llm._begin(quota)
        try:
            result = await call()
            if stream if stream is not None else _is_async_stream(result):
                wrapped = llm.wrap_stream(result)
            else:
                llm.set_response(result)
                wrapped = result
        except BaseException as exc:
            llm._end(exc)
            raise
        llm._end(None)
        return wrapped

    def tool(self, name: str, *, call_id: Optional[str] = None, content: Any = None,
             attributes: Optional[Mapping[str, Any]] = None, operation: Optional[str] = None) -> "ToolSpan":
        """A context manager (or decorator) recording `tool_call` on entry and
        `tool_result` on exit with its duration and status; set `.result` to send the
        result as the tool_result's content."""
        return ToolSpan(self.client, name, session=self, call_id=call_id, content=content, attributes=attributes,
                        operation=operation)


def _is_stream(result: Any) -> bool:
    return hasattr(result, "__next__") and not isinstance(result, (str, bytes, Mapping))


def _is_async_stream(result: Any) -> bool:
    return hasattr(result, "__anext__")


class LlmCall:
    """One LLM call of a session, as a context manager:

        with session.llm_call(model="claude-sonnet-4", provider="anthropic") as call:
            response = anthropic.messages.create(...)
            call.set_response(response)

    On entry: the quota check (unless `check_quota=False`; QuotaExceeded if refused, after
    recording an `error` event) and `llm_request`. On exit: `llm_response` with the
    duration and the usage of `set_response` / `set_usage`, or an `error` event if the
    block raised. `wrap_stream` defers the response until the stream ends.
    """

    def __init__(self, session: Session, *, model: str, provider: str, operation: Optional[str] = None,
                 estimated_tokens: int = 0, estimated_cost_usd: Optional[float] = None, check_quota: bool = True,
                 content: Any = None, attributes: Optional[Mapping[str, Any]] = None,
                 cost_usd: Optional[float] = None):
        for name, value in (("model", model), ("provider", provider)):
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} is required")
        self.session = session
        self.model = model
        self.provider = provider
        self.operation = operation
        self.estimated_tokens = estimated_tokens
        self.estimated_cost_usd = estimated_cost_usd
        self.check_quota = check_quota
        self.content = content
        self.attributes = dict(attributes or {})
        self.cost_usd = cost_usd
        self.span_id = new_span_id()
        self.parent_span_id = session._parent()
        self.quota: Optional[QuotaResult] = None
        self.usage: Optional[Usage] = None
        self.response_model: Optional[str] = None
        self.response_content: Any = None
        self.time_to_first_token_ms: Optional[int] = None
        self.duration_ms: Optional[int] = None
        self._start: Optional[float] = None
        self._deferred = False
        self._done = False

    def _common(self) -> Dict[str, Any]:
        fields: Dict[str, Any] = {"span_id": self.span_id, "parent_span_id": self.parent_span_id,
                                  "provider": self.provider}
        if self.operation:
            fields["operation"] = self.operation
        if self.attributes:
            fields["attributes"] = self.attributes
        return fields

    def _check_quota(self) -> Optional[QuotaResult]:
        if not self.check_quota:
            return None
        return self.session.check(model=self.model, operation=self.operation, estimated_tokens=self.estimated_tokens,
                                  estimated_cost_usd=self.estimated_cost_usd)

    def _begin(self, quota: Optional[QuotaResult]) -> None:
        self.quota = quota
        if quota is not None and not quota.allowed:
            self._done = True
            self.session._emit(ErrorEvent, model=self.model, status="error",
                               error=ErrorInfo(type="QuotaExceeded", message=quota.reason or "not allowed"),
                               **self._common())
            raise QuotaExceeded(quota)
        self.session._emit(LlmRequest, model=self.model, content=self.content, **self._common())
        self._start = time.perf_counter()

    def __enter__(self) -> "LlmCall":
        self._begin(self._check_quota())
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        self._end(exc)

    def _end(self, exc: Optional[BaseException]) -> None:
        if exc is not None:
            self.fail(exc)
        elif not self._deferred:
            self.finish()

    def set_response(self, response: Any) -> None:
        """Reads usage and the answering model from a provider response."""
        try:
            usage = usage_from_response(response)
        except (TypeError, ValueError):
            log.warning("tally: could not read usage from a %s response", type(response).__name__, exc_info=True)
            usage = None
        if usage is not None:
            self.usage = usage
        self.response_model = model_from_response(response) or self.response_model

    def set_usage(self, usage: Usage) -> None:
        self.usage = usage

    def wrap_stream(self, stream: Any) -> Any:
        """The stream, wrapped to measure the first chunk and read usage as it passes; the
        response is recorded when it ends."""
        self._deferred = True
        if _is_async_stream(stream):
            return AsyncMeteredStream(stream, self)
        return MeteredStream(stream, self)

    def _elapsed(self) -> Optional[int]:
        return _ms_since(self._start) if self._start is not None else None

    def finish(self) -> None:
        """Records `llm_response` (once)."""
        if self._done:
            return
        self._done = True
        self.duration_ms = self._elapsed()
        self.session._emit(LlmResponse, model=self.response_model or self.model, usage=self.usage,
                           cost_usd=self.cost_usd, duration_ms=self.duration_ms,
                           time_to_first_token_ms=self.time_to_first_token_ms, status="ok",
                           content=self.response_content, **self._common())

    def fail(self, exc: BaseException) -> None:
        """Records an `error` event for the call (once)."""
        if self._done:
            return
        self._done = True
        self.duration_ms = self._elapsed()
        include_stack = getattr(self.session.client, "capture_stack", True)
        self.session._emit(ErrorEvent, model=self.response_model or self.model, usage=self.usage,
                           duration_ms=self.duration_ms, time_to_first_token_ms=self.time_to_first_token_ms,
                           status="error", error=ErrorInfo.from_exception(exc, include_stack=include_stack),
                           **self._common())


class _StreamBase:
    def __init__(self, stream: Any, call: LlmCall):
        self._stream = stream
        self._iterator = stream if hasattr(stream, "__next__") or hasattr(stream, "__anext__") else (
            stream.__aiter__() if hasattr(stream, "__aiter__") else iter(stream))
        self._call = call
        self._accumulator = StreamAccumulator()
        self._finished = False

    def _chunk(self, chunk: Any) -> None:
        if self._accumulator.chunks == 0 and self._call._start is not None:
            self._call.time_to_first_token_ms = _ms_since(self._call._start)
        try:
            self._accumulator.add(chunk)
        except Exception:
            log.debug("tally: could not read a stream chunk", exc_info=True)

    def _finish(self, exc: Optional[BaseException]) -> None:
        if self._finished:
            return
        self._finished = True
        usage = self._accumulator.usage()
        if usage is not None:
            self._call.usage = usage
        if self._accumulator.model:
            self._call.response_model = self._accumulator.model
        if exc is None:
            self._call.finish()
        else:
            self._call.fail(exc)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._stream, name)

    def __del__(self) -> None:
        try:
            self._finish(None)
        except Exception:
            pass


class MeteredStream(_StreamBase):
    """A provider's stream, passed through chunk by chunk while it is metered."""

    def __iter__(self) -> "MeteredStream":
        return self

    def __next__(self) -> Any:
        try:
            chunk = next(self._iterator)
        except StopIteration:
            self._finish(None)
            raise
        except BaseException as exc:
            self._finish(exc)
            raise
        self._chunk(chunk)
        return chunk

    def close(self) -> None:
        """Closes the stream early; the response is recorded with what arrived."""
        try:
            if hasattr(self._stream, "close"):
                self._stream.close()
        finally:
            self._finish(None)

    def __enter__(self) -> "MeteredStream":
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if exc is not None:
            self._finish(exc)
        self.close()


class AsyncMeteredStream(_StreamBase):
    """An async stream, passed through chunk by chunk while it is metered."""

    def __aiter__(self) -> "AsyncMeteredStream":
        return self

    async def __anext__(self) -> Any:
        try:
            chunk = await self._iterator.__anext__()
        except StopAsyncIteration:
            self._finish(None)
            raise
        except BaseException as exc:
            self._finish(exc)
            raise
        self._chunk(chunk)
        return chunk

    async def aclose(self) -> None:
        try:
            closer = getattr(self._stream, "aclose", None) or getattr(self._stream, "close", None)
            if closer is not None:
                result = closer()
                if inspect.isawaitable(result):
                    await result
        finally:
            self._finish(None)

    async def __aenter__(self) -> "AsyncMeteredStream":
        return self

    async def __aexit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if exc is not None:
            self._finish(exc)
        await self.aclose()


class ToolSpan:
    """`tool_call` on entry, `tool_result` on exit (duration, status, error). Also a
    decorator: each call of the decorated function is one tool call. The session is the
    one given, else the current one at the time of the call."""

    def __init__(self, client: Any, name: str, *, session: Optional[Session] = None, call_id: Optional[str] = None,
                 content: Any = None, attributes: Optional[Mapping[str, Any]] = None,
                 operation: Optional[str] = None, account_id: Optional[str] = None,
                 session_id: Optional[str] = None):
        ToolInfo(name=name, call_id=call_id)  # checks the name now, not later
        self.client = client
        self.name = name
        self.call_id = call_id
        self.content = content
        self.attributes = dict(attributes or {})
        self.operation = operation
        self.result: Any = None
        self.span_id = new_span_id()
        self._session = session
        self._session_ids = {"account_id": account_id, "session_id": session_id}
        self._start: Optional[float] = None
        self._token: Optional[contextvars.Token] = None

    def _resolve(self) -> Session:
        if self._session is None:
            self._session = _session_for(self.client, dict(self._session_ids))
        return self._session

    def _fields(self) -> Dict[str, Any]:
        fields: Dict[str, Any] = {"tool": ToolInfo(self.name, self.call_id or self.span_id), "span_id": self.span_id}
        if self.operation:
            fields["operation"] = self.operation
        if self.attributes:
            fields["attributes"] = self.attributes
        return fields

    def __enter__(self) -> "ToolSpan":
        session = self._resolve()
        session._emit(ToolCall, content=self.content, **self._fields())
        self._token = _current_span.set(self.span_id)
        self._start = time.perf_counter()
        return self

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        if self._token is not None:
            _current_span.reset(self._token)
            self._token = None
        session = self._resolve()
        duration = _ms_since(self._start) if self._start is not None else None
        if exc is None:
            session._emit(ToolResult, content=self.result, duration_ms=duration, status="ok", **self._fields())
        else:
            include_stack = getattr(self.client, "capture_stack", True)
            session._emit(ToolResult, content=self.result, duration_ms=duration, status="error",
                          error=ErrorInfo.from_exception(exc, include_stack=include_stack), **self._fields())

    def _fresh(self) -> "ToolSpan":
        return ToolSpan(self.client, self.name, session=self._session, call_id=None, content=None,
                        attributes=self.attributes, operation=self.operation, **self._session_ids)

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await fn(*args, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)
        return wrapper


def _session_for(client: Any, options: Dict[str, Any]) -> Session:
    """The session a call belongs to: `session_id` / `account_id` popped from `options`, or
    the current session of this client."""
    session_id = options.pop("session_id", None)
    account_id = options.pop("account_id", None)
    current = _current_session.get()
    if session_id is None and account_id is None:
        if current is not None and current.client is client:
            return current
        raise RuntimeError("no current session: run inside `with tally.session(...)` or pass session_id= and "
                           "account_id=")
    if current is not None and current.client is client and session_id in (None, current.session_id) \
            and account_id in (None, current.account_id):
        return current
    if not session_id or not account_id:
        raise ValueError("pass both session_id= and account_id= (or run inside `with tally.session(...)`)")
    return Session(client, account_id=account_id, session_id=session_id)


def metered(client: Any, **options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator metering every call of a function that makes one LLM call; options as
    `Session.meter`. The session is resolved at call time."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await client.ameter(lambda: fn(*args, **kwargs), **dict(options))
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return client.meter(lambda: fn(*args, **kwargs), **dict(options))
        return wrapper

    return decorate
