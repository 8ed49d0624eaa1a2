"""Token usage read from LLM provider responses, mapped to Tally's semantics.

Tally counts like OpenTelemetry GenAI: `input_tokens` INCLUDES cache reads and cache writes.
Providers differ:

- OpenAI Chat Completions: `usage.prompt_tokens` already includes
  `usage.prompt_tokens_details.cached_tokens` -> input = prompt_tokens, cache_read = cached.
- OpenAI Responses API: `usage.input_tokens` already includes
  `usage.input_tokens_details.cached_tokens` -> input = input_tokens, cache_read = cached.
- Anthropic Messages: `usage.input_tokens` EXCLUDES `cache_read_input_tokens` and
  `cache_creation_input_tokens` -> input = input_tokens + cache_read + cache_creation,
  cache_read = cache_read_input_tokens, cache_write = cache_creation_input_tokens.
- Google Gemini: `usage_metadata.prompt_token_count` includes
  `cached_content_token_count`; output = candidates + thoughts.

The shapes are told apart by their fields (which also covers OpenAI-compatible and
Anthropic-compatible hosts), not by the provider's name. Responses may be SDK objects
(attributes) or plain dicts (keys).
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from .events import Usage

__all__ = ["usage_from_response", "map_usage", "model_from_response", "StreamAccumulator"]

_MISSING = object()

_USAGE_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "prompt_tokens_details",
    "prompt_cache_hit_tokens",
    "input_tokens",
    "output_tokens",
    "input_tokens_details",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_token_count",
    "candidates_token_count",
    "cached_content_token_count",
    "thoughts_token_count",
)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if obj is None:
        return default
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    value = getattr(obj, name, _MISSING)
    return default if value is _MISSING else value


def _count(value: Any) -> int:
    if isinstance(value, bool) or value is None:
        return 0
    if isinstance(value, int):
        return max(value, 0)
    if isinstance(value, float) and value.is_integer():
        return max(int(value), 0)
    return 0


def _has(obj: Any, name: str) -> bool:
    return _get(obj, name) is not None


def map_usage(usage: Any) -> Optional[Usage]:
    """Tally's Usage for a provider's usage object (or dict), or None if it is not one."""
    if usage is None:
        return None
    if _has(usage, "prompt_tokens") or _has(usage, "completion_tokens"):
        # OpenAI Chat Completions (and OpenAI-compatible APIs): prompt_tokens includes cached.
        prompt = _count(_get(usage, "prompt_tokens"))
        cached = _count(_get(_get(usage, "prompt_tokens_details"), "cached_tokens"))
        if not cached:
            cached = _count(_get(usage, "prompt_cache_hit_tokens"))  # DeepSeek's name for it
        return Usage(
            input_tokens=prompt,
            output_tokens=_count(_get(usage, "completion_tokens")),
            cache_read_tokens=min(cached, prompt),
        )
    if _has(usage, "cache_read_input_tokens") or _has(usage, "cache_creation_input_tokens"):
        # Anthropic: input_tokens counts only the tokens after the last cache breakpoint.
        cache_read = _count(_get(usage, "cache_read_input_tokens"))
        cache_write = _count(_get(usage, "cache_creation_input_tokens"))
        return Usage(
            input_tokens=_count(_get(usage, "input_tokens")) + cache_read + cache_write,
            output_tokens=_count(_get(usage, "output_tokens")),
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )
    if _has(usage, "input_tokens") or _has(usage, "output_tokens"):
        # OpenAI Responses API (input includes cached), or Anthropic without cache fields
        # (then there is nothing cached and both readings agree).
        inputs = _count(_get(usage, "input_tokens"))
        cached = _count(_get(_get(usage, "input_tokens_details"), "cached_tokens"))
        return Usage(
            input_tokens=inputs,
            output_tokens=_count(_get(usage, "output_tokens")),
            cache_read_tokens=min(cached, inputs),
        )
    if _has(usage, "prompt_token_count") or _has(usage, "candidates_token_count"):
        prompt = _count(_get(usage, "prompt_token_count"))
        return Usage(
            input_tokens=prompt,
            output_tokens=_count(_get(usage, "candidates_token_count")) + _count(_get(usage, "thoughts_token_count")),
            cache_read_tokens=min(_count(_get(usage, "cached_content_token_count")), prompt),
        )
    return None


def _usage_object(response: Any) -> Any:
    """Where a response (or a stream chunk) keeps its usage, if anywhere."""
    for path in (("usage",), ("usage_metadata",), ("message", "usage"), ("response", "usage")):
        value = response
        for name in path:
            value = _get(value, name)
            if value is None:
                break
        if value is not None:
            return value
    return None


def usage_from_response(response: Any) -> Optional[Usage]:
    """Tally's Usage of an OpenAI-, Anthropic- or Gemini-shaped response, or None."""
    return map_usage(_usage_object(response))


def model_from_response(response: Any) -> Optional[str]:
    """The model that answered (e.g. `gpt-4o-2024-08-06`), when the response names it."""
    for path in (("model",), ("model_version",), ("message", "model"), ("response", "model")):
        value = response
        for name in path:
            value = _get(value, name)
        if isinstance(value, str) and value:
            return value
    return None


def _fields(usage: Any) -> Dict[str, Any]:
    return {name: value for name in _USAGE_FIELDS if (value := _get(usage, name)) is not None}


class StreamAccumulator:
    """Collects usage and the model from the chunks of a streamed response.

    OpenAI sends usage once, on the last chunk (with `stream_options={"include_usage":
    True}`); the Responses API on its `response.completed` event; Anthropic sends the input
    and cache counts in `message_start` and cumulative output in `message_delta`. Later
    values replace earlier ones field by field, which fits all three.
    """

    def __init__(self) -> None:
        self._fields: Dict[str, Any] = {}
        self.model: Optional[str] = None
        self.chunks = 0

    def add(self, chunk: Any) -> None:
        self.chunks += 1
        usage = _usage_object(chunk)
        if usage is not None:
            self._fields.update(_fields(usage))
        model = model_from_response(chunk)
        if model:
            self.model = model

    def usage(self) -> Optional[Usage]:
        return map_usage(self._fields) if self._fields else None
