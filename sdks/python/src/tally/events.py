"""Typed events of Tally's wire contract (`sdk-spec/`), one class per event type.

Every event carries `session_id` and `account_id` (who the usage is billed to); `event_id`
(a UUID v7) and `timestamp` (now) are filled in when not given. Values are checked when the
event is built, so a mistake shows up where it was made rather than as a rejection later:
wrong types raise TypeError, wrong values ValueError. What only the server knows (its
length limits, the retention window) is left to it; its per-event rejections reach the
client's `on_rejected` callback.

`to_wire()` gives the JSON object the server stores and returns in a session's timeline:
empty strings and empty maps count as absent and are left out, `usage` always has its four
counters (and is left out when they are all zero), times are RFC 3339 in UTC with
milliseconds.
"""

from __future__ import annotations

import math
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Dict, Mapping, Optional, Type, Union

from ._time import format_rfc3339, parse_rfc3339, to_utc, utc_now
from .ids import new_event_id

try:  # Python 3.8+ has Literal in typing
    from typing import Literal
except ImportError:  # pragma: no cover
    from typing_extensions import Literal  # type: ignore

__all__ = [
    "EVENT_TYPES",
    "AttributeValue",
    "Usage",
    "ToolInfo",
    "ErrorInfo",
    "Event",
    "SessionStart",
    "SessionEnd",
    "UserMessage",
    "LlmRequest",
    "LlmResponse",
    "ToolCall",
    "ToolResult",
    "Knowledge",
    "ErrorEvent",
    "Artifact",
    "Custom",
    "EVENT_CLASSES",
    "event_from_wire",
]

EVENT_TYPES = (
    "session_start",
    "session_end",
    "user_message",
    "llm_request",
    "llm_response",
    "tool_call",
    "tool_result",
    "knowledge",
    "error",
    "artifact",
    "custom",
)

AttributeValue = Union[str, int, float, bool]
Status = Literal["ok", "error"]

_MAX_ERROR_MESSAGE = 8 * 1024
_MAX_ERROR_STACK = 64 * 1024


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_count(owner: str, name: str, value: Any) -> None:
    if not _is_int(value):
        raise TypeError(f"{owner}.{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{owner}.{name} must not be negative (got {value})")


def _check_optional_str(owner: str, name: str, value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{owner}.{name} must be a str, not {type(value).__name__}")


def _present(value: Optional[str]) -> bool:
    return value is not None and value != ""


@dataclass(frozen=True)
class Usage:
    """Token counts with OpenTelemetry GenAI semantics: `input_tokens` INCLUDES the cache
    reads and cache writes, so it is never smaller than their sum."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def __post_init__(self) -> None:
        for name in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            _check_count("usage", name, getattr(self, name))
        if self.cache_read_tokens + self.cache_write_tokens > self.input_tokens:
            raise ValueError(
                "usage.input_tokens includes cache reads and writes, so it cannot be smaller than "
                f"their sum ({self.input_tokens} < {self.cache_read_tokens} + {self.cache_write_tokens})"
            )

    def is_zero(self) -> bool:
        return not (self.input_tokens or self.output_tokens or self.cache_read_tokens or self.cache_write_tokens)

    def to_wire(self) -> Dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> "Usage":
        return cls(**{k: data[k] for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")
                      if data.get(k) is not None})


@dataclass(frozen=True)
class ToolInfo:
    """The tool of a `tool_call` / `tool_result`; `call_id` ties a result to its call."""

    name: str
    call_id: Optional[str] = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"tool.name must be a str, not {type(self.name).__name__}")
        if not self.name:
            raise ValueError("tool.name must not be empty")
        _check_optional_str("tool", "call_id", self.call_id)

    def to_wire(self) -> Dict[str, str]:
        wire = {"name": self.name}
        if _present(self.call_id):
            wire["call_id"] = self.call_id  # type: ignore[assignment]
        return wire


@dataclass(frozen=True)
class ErrorInfo:
    """What went wrong: a `type` (e.g. the exception class), a `message` and a `stack`."""

    type: Optional[str] = None
    message: Optional[str] = None
    stack: Optional[str] = None

    def __post_init__(self) -> None:
        for name in ("type", "message", "stack"):
            _check_optional_str("error", name, getattr(self, name))

    @classmethod
    def from_exception(cls, exc: BaseException, include_stack: bool = True) -> "ErrorInfo":
        """The exception's class name, its message and (optionally) its traceback, each
        cut to the server's limits (8 KiB of message, 64 KiB of stack)."""
        message = str(exc) or None
        stack = None
        if include_stack and exc.__traceback__ is not None:
            stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            stack = stack[-_MAX_ERROR_STACK:]
        return cls(
            type=type(exc).__name__,
            message=message[:_MAX_ERROR_MESSAGE] if message else None,
            stack=stack,
        )

    def is_empty(self) -> bool:
        return not (_present(self.type) or _present(self.message))

    def to_wire(self) -> Dict[str, str]:
        return {k: v for k, v in (("type", self.type), ("message", self.message), ("stack", self.stack)) if _present(v)}


def _coerce_timestamp(value: Any) -> datetime:
    """UTC, cut to the millisecond (the precision of the wire)."""
    if isinstance(value, datetime):
        value = to_utc(value)
    elif isinstance(value, str):
        value = parse_rfc3339(value)
    else:
        raise TypeError(f"timestamp must be a datetime or an RFC 3339 str, not {type(value).__name__}")
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _coerce_event_id(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"event_id must be a str or UUID, not {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValueError(f"event_id must be a UUID (got {value!r})") from None


_OPTIONAL_STRINGS = ("trace_id", "span_id", "parent_span_id", "operation", "model", "provider")


@dataclass
class Event:
    """Fields every event may carry. Use one of the subclasses (one per event type)."""

    session_id: str
    account_id: str
    event_id: str = field(default_factory=new_event_id)
    timestamp: datetime = field(default_factory=utc_now)
    trace_id: Optional[str] = None
    span_id: Optional[str] = None
    parent_span_id: Optional[str] = None
    operation: Optional[str] = None
    model: Optional[str] = None
    provider: Optional[str] = None
    usage: Optional[Usage] = None
    cost_usd: Optional[Union[int, float, Decimal]] = None
    duration_ms: Optional[int] = None
    time_to_first_token_ms: Optional[int] = None
    status: Optional[Status] = None
    tool: Optional[ToolInfo] = None
    error: Optional[ErrorInfo] = None
    content: Any = None
    attributes: Optional[Dict[str, AttributeValue]] = None

    type: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not self.type:
            raise TypeError("Event is abstract: build one of its subclasses (LlmResponse, ToolCall, ...)")
        for name in ("session_id", "account_id"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise TypeError(f"{name} must be a str, not {type(value).__name__}")
            if not value:
                raise ValueError(f"{name} is required")
        self.event_id = _coerce_event_id(self.event_id)
        self.timestamp = _coerce_timestamp(self.timestamp)
        for name in _OPTIONAL_STRINGS:
            _check_optional_str(self.type, name, getattr(self, name))
        if isinstance(self.usage, Mapping):
            self.usage = Usage.from_wire(self.usage)
        elif self.usage is not None and not isinstance(self.usage, Usage):
            raise TypeError(f"usage must be a Usage, not {type(self.usage).__name__}")
        if self.cost_usd is not None:
            if not (_is_int(self.cost_usd) or isinstance(self.cost_usd, (float, Decimal))):
                raise TypeError(f"cost_usd must be a number, not {type(self.cost_usd).__name__}")
            if not math.isfinite(self.cost_usd) or self.cost_usd < 0:
                raise ValueError(f"cost_usd must be a finite, non-negative amount of USD (got {self.cost_usd})")
        for name in ("duration_ms", "time_to_first_token_ms"):
            if getattr(self, name) is not None:
                _check_count(self.type, name, getattr(self, name))
        if self.status is not None and self.status not in ("ok", "error"):
            raise ValueError(f"status must be 'ok' or 'error' (got {self.status!r})")
        if isinstance(self.tool, Mapping):
            self.tool = ToolInfo(**self.tool)
        elif self.tool is not None and not isinstance(self.tool, ToolInfo):
            raise TypeError(f"tool must be a ToolInfo, not {type(self.tool).__name__}")
        if isinstance(self.error, BaseException):
            self.error = ErrorInfo.from_exception(self.error)
        elif isinstance(self.error, Mapping):
            self.error = ErrorInfo(**self.error)
        elif self.error is not None and not isinstance(self.error, ErrorInfo):
            raise TypeError(f"error must be an ErrorInfo, not {type(self.error).__name__}")
        if self.attributes is not None:
            if not isinstance(self.attributes, Mapping):
                raise TypeError(f"attributes must be a dict, not {type(self.attributes).__name__}")
            for key, value in self.attributes.items():
                if not isinstance(key, str) or not key:
                    raise ValueError(f"attribute names must be non-empty str (got {key!r})")
                if not isinstance(value, (str, int, float, bool)):
                    raise TypeError(f"attributes.{key} must be a str, number or bool, not {type(value).__name__}")
                if isinstance(value, float) and not math.isfinite(value):
                    raise ValueError(f"attributes.{key} must be finite")
        self._check()

    def _check(self) -> None:
        """Per-type requirements; subclasses extend it."""

    def to_wire(self) -> Dict[str, Any]:
        """The event as the JSON object of the wire contract."""
        wire: Dict[str, Any] = {
            "event_id": self.event_id,
            "type": self.type,
            "timestamp": format_rfc3339(self.timestamp),
            "session_id": self.session_id,
            "account_id": self.account_id,
        }
        for name in _OPTIONAL_STRINGS:
            value = getattr(self, name)
            if _present(value):
                wire[name] = value
        if self.usage is not None and not self.usage.is_zero():
            wire["usage"] = self.usage.to_wire()
        if self.cost_usd is not None:
            wire["cost_usd"] = float(self.cost_usd) if isinstance(self.cost_usd, Decimal) else self.cost_usd
        for name in ("duration_ms", "time_to_first_token_ms", "status"):
            value = getattr(self, name)
            if value is not None:
                wire[name] = value
        if self.tool is not None:
            wire["tool"] = self.tool.to_wire()
        if self.error is not None:
            error = self.error.to_wire()
            if error:
                wire["error"] = error
        if self.content is not None:
            wire["content"] = self.content
        if self.attributes:
            wire["attributes"] = dict(self.attributes)
        return wire


class _LlmEvent(Event):
    def _check(self) -> None:
        for name in ("model", "provider"):
            if not _present(getattr(self, name)):
                raise ValueError(f"{name} is required on {self.type} events")


class _ToolEvent(Event):
    def _check(self) -> None:
        if self.tool is None:
            raise ValueError(f"tool is required on {self.type} events")


@dataclass
class SessionStart(Event):
    type: ClassVar[str] = "session_start"


@dataclass
class SessionEnd(Event):
    type: ClassVar[str] = "session_end"


@dataclass
class UserMessage(Event):
    type: ClassVar[str] = "user_message"


@dataclass
class LlmRequest(_LlmEvent):
    """A call to a model was made; `model` and `provider` are required."""

    type: ClassVar[str] = "llm_request"


@dataclass
class LlmResponse(_LlmEvent):
    """A model answered: `usage`, `duration_ms`, `time_to_first_token_ms`; `model` and
    `provider` are required."""

    type: ClassVar[str] = "llm_response"


@dataclass
class ToolCall(_ToolEvent):
    type: ClassVar[str] = "tool_call"


@dataclass
class ToolResult(_ToolEvent):
    type: ClassVar[str] = "tool_result"


@dataclass
class Knowledge(Event):
    type: ClassVar[str] = "knowledge"


@dataclass
class ErrorEvent(Event):
    """Something failed; `error` needs a `type` or a `message` (an exception will do)."""

    type: ClassVar[str] = "error"

    def _check(self) -> None:
        if self.error is None or self.error.is_empty():
            raise ValueError("error events need error.type or error.message")


@dataclass
class Artifact(Event):
    type: ClassVar[str] = "artifact"


@dataclass
class Custom(Event):
    type: ClassVar[str] = "custom"


EVENT_CLASSES: Dict[str, Type[Event]] = {
    cls.type: cls
    for cls in (SessionStart, SessionEnd, UserMessage, LlmRequest, LlmResponse, ToolCall, ToolResult,
                Knowledge, ErrorEvent, Artifact, Custom)
}

_FIELDS = (
    "session_id", "account_id", "event_id", "timestamp", *_OPTIONAL_STRINGS, "usage", "cost_usd", "duration_ms",
    "time_to_first_token_ms", "status", "tool", "error", "content", "attributes",
)


def event_from_wire(data: Mapping[str, Any]) -> Event:
    """The typed event of a wire-form object (as a timeline returns it). Fields this SDK does
    not know are ignored, as the server ignores them; an unknown `type` is a ValueError."""
    if not isinstance(data, Mapping):
        raise TypeError(f"an event must be a JSON object, not {type(data).__name__}")
    kind = data.get("type")
    cls = EVENT_CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown event type {kind!r}")
    kwargs = {name: data[name] for name in _FIELDS if name in data and data[name] is not None}
    for name in ("session_id", "account_id"):
        kwargs.setdefault(name, "")
    for name in ("event_id", "timestamp"):
        if kwargs.get(name) in (None, ""):
            raise ValueError(f"{name} is required")
    return cls(**kwargs)
