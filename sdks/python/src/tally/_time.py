"""RFC 3339 timestamps in UTC with milliseconds, the wire form of every time."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def to_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is taken to be in UTC already."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def format_rfc3339(value: datetime) -> str:
    """`2026-11-22T10:00:00.120Z`: UTC, milliseconds (truncated), `Z`."""
    value = to_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (value.microsecond // 1000)


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 date-time (with an offset or `Z`) as an aware datetime in UTC.

    Digits past microseconds are dropped. Raises ValueError for anything else.
    """
    match = _RFC3339.match(text)
    if not match:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    fraction = (match.group(7) or "0")[:6].ljust(6, "0")
    if second == 60:  # a leap second: the same instant as :59.999999 for our purposes
        second, fraction = 59, "999999"
    if match.group(8):
        offset = timedelta(0)
    else:
        sign = 1 if match.group(9) == "+" else -1
        offset = sign * timedelta(hours=int(match.group(10)), minutes=int(match.group(11)))
    local = datetime(year, month, day, hour, minute, second, int(fraction), tzinfo=timezone(offset))
    return local.astimezone(timezone.utc)
