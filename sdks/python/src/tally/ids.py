"""Identifiers: UUID version 7 event ids (RFC 9562) and W3C-style trace and span ids."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Callable, Optional

__all__ = ["uuid7", "new_event_id", "new_trace_id", "new_span_id", "uuid7_time_ms"]

_COUNTER_BITS = 12
_COUNTER_MAX = (1 << _COUNTER_BITS) - 1


class _Uuid7Generator:
    """UUID v7 with a 12-bit counter in `rand_a` (RFC 9562, section 6.2, method 1).

    Layout: 48-bit Unix time in ms | version 7 (4 bits) | 12-bit counter | variant 0b10
    (2 bits) | 62 random bits. Within one millisecond the counter goes up, so the ids one
    process makes sort in the order they were made; a new millisecond starts the counter at a
    random value in its lower half, leaving room to count. If the counter runs out, or the
    clock goes backwards, the timestamp is carried forward by one millisecond rather than
    letting ids go out of order.
    """

    def __init__(self, clock_ms: Optional[Callable[[], int]] = None, random_bytes: Callable[[int], bytes] = os.urandom):
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._random_bytes = random_bytes
        self._lock = threading.Lock()
        self._last_ms = -1
        self._counter = 0

    def __call__(self) -> uuid.UUID:
        rand = int.from_bytes(self._random_bytes(10), "big")
        with self._lock:
            now = self._clock_ms()
            if now > self._last_ms:
                self._last_ms = now
                self._counter = (rand >> 64) & (_COUNTER_MAX >> 1)
            else:
                self._counter += 1
                if self._counter > _COUNTER_MAX:
                    self._last_ms += 1
                    self._counter = (rand >> 64) & (_COUNTER_MAX >> 1)
            ms, counter = self._last_ms, self._counter
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76
        value |= counter << 64
        value |= 0b10 << 62
        value |= rand & ((1 << 62) - 1)
        return uuid.UUID(int=value)


uuid7: Callable[[], uuid.UUID] = _Uuid7Generator()
"""A new UUID version 7: time-ordered, unique."""


def new_event_id() -> str:
    """A new event id: a UUID v7 in its lower-case hyphenated form."""
    return str(uuid7())


def uuid7_time_ms(value: uuid.UUID) -> int:
    """The Unix time in milliseconds a UUID v7 carries."""
    return value.int >> 80


def new_trace_id() -> str:
    """32 lower-case hex digits, never all zero (W3C Trace Context)."""
    while True:
        value = os.urandom(16).hex()
        if value.strip("0"):
            return value


def new_span_id() -> str:
    """16 lower-case hex digits, never all zero (W3C Trace Context)."""
    while True:
        value = os.urandom(8).hex()
        if value.strip("0"):
            return value
