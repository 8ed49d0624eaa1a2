"""Tally's Python SDK: typed events, batched and retried delivery, quota checks, and metering
of LLM calls, tools and sessions.

    import tally

    client = tally.Tally(api_key="...", endpoint="http://127.0.0.1:8080")
    with client.session(account_id="acct-1") as session:
        reply = session.meter(lambda: llm.chat.completions.create(...), model="gpt-4o", provider="openai")
"""

from .client import DeliveryError, Rejection, Stats, Tally, backoff_delay, parse_retry_after
from .events import (
    EVENT_CLASSES,
    EVENT_TYPES,
    Artifact,
    Custom,
    ErrorEvent,
    ErrorInfo,
    Event,
    Knowledge,
    LlmRequest,
    LlmResponse,
    SessionEnd,
    SessionStart,
    ToolCall,
    ToolInfo,
    ToolResult,
    Usage,
    UserMessage,
    event_from_wire,
)
from .ids import new_event_id, new_span_id, new_trace_id, uuid7
from .metering import AsyncMeteredStream, LlmCall, MeteredStream, Session, ToolSpan, current_session
from .quota import QuotaExceeded, QuotaLimit, QuotaResult
from .transport import HttpResponse, Transport, TransportError, UrllibTransport
from .usage import StreamAccumulator, map_usage, model_from_response, usage_from_response

__version__ = "0.1.0"

__all__ = [
    "Tally", "Rejection", "DeliveryError", "Stats", "backoff_delay", "parse_retry_after",
    "EVENT_CLASSES", "EVENT_TYPES", "Event", "SessionStart", "SessionEnd", "UserMessage", "LlmRequest",
    "LlmResponse", "ToolCall", "ToolResult", "Knowledge", "ErrorEvent", "Artifact", "Custom", "Usage",
    "ToolInfo", "ErrorInfo", "event_from_wire",
    "uuid7", "new_event_id", "new_trace_id", "new_span_id",
    "Session", "LlmCall", "ToolSpan", "MeteredStream", "AsyncMeteredStream", "current_session",
    "QuotaResult", "QuotaLimit", "QuotaExceeded",
    "Transport", "TransportError", "HttpResponse", "UrllibTransport",
    "usage_from_response", "map_usage", "model_from_response", "StreamAccumulator",
]
