"""The answer of `POST /v1/quota/check`, typed, and read leniently: fields and reasons this
SDK does not know yet are kept (`raw`, plain strings) rather than refused."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, List, Mapping, Optional, Tuple

from ._time import parse_rfc3339

__all__ = ["QuotaLimit", "QuotaResult", "QuotaExceeded", "KNOWN_REASONS", "KNOWN_STATUSES"]

KNOWN_REASONS = (
    "tokens_per_day_exceeded",
    "tokens_per_month_exceeded",
    "cost_per_month_exceeded",
    "tokens_per_hour_exceeded",
    "requests_per_minute_exceeded",
    "tokens_per_minute_exceeded",
    "tokens_per_request_exceeded",
    "model_not_allowed",
    "operation_not_in_plan",
    "quota_view_stale",
    "quota_account_cap",
)
"""Reasons the server is known to give; others may come and are passed through as they are."""

KNOWN_STATUSES = ("ok", "warning", "critical", "exceeded")

UNAVAILABLE = "quota_service_unavailable"
"""`reason` of an answer decided by the client because Tally could not be asked."""


@dataclass(frozen=True)
class QuotaLimit:
    name: str
    window: Optional[str] = None
    limit: Optional[float] = None
    used: Optional[float] = None
    remaining: Optional[float] = None
    resets_at: Optional[datetime] = None
    unit: Optional[str] = None
    percent_used: Optional[float] = None
    status: Optional[str] = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "QuotaLimit":
        resets_at = data.get("resets_at")
        try:
            parsed = parse_rfc3339(resets_at) if isinstance(resets_at, str) else None
        except ValueError:
            parsed = None
        return cls(
            name=str(data.get("name", "")),
            window=data.get("window") if isinstance(data.get("window"), str) else None,
            limit=_number(data.get("limit")),
            used=_number(data.get("used")),
            remaining=_number(data.get("remaining")),
            resets_at=parsed,
            unit=data.get("unit") if isinstance(data.get("unit"), str) else None,
            percent_used=_number(data.get("percent_used")),
            status=data.get("status") if isinstance(data.get("status"), str) else None,
            raw=dict(data),
        )


@dataclass(frozen=True)
class QuotaResult:
    """Whether the account may go ahead, and why not.

    `fallback` is True when Tally could not be asked (unreachable, too slow, an error
    answer) and the client's `quota_fail_open` setting decided; `error` then says why.
    `header_limit`, `header_remaining` and `header_reset` come from X-Quota-Limit,
    X-Quota-Remaining and X-Quota-Reset (the tightest limit). `raw` is the JSON answer.
    """

    allowed: bool
    reason: Optional[str] = None
    status: str = "ok"
    plan: Optional[str] = None
    limits: Tuple[QuotaLimit, ...] = ()
    requires_upgrade: bool = False
    stale: bool = False
    header_limit: Optional[float] = None
    header_remaining: Optional[float] = None
    header_reset: Optional[str] = None
    fallback: bool = False
    error: Optional[str] = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def known_reason(self) -> bool:
        return self.reason is None or self.reason in KNOWN_REASONS

    def limit(self, name: str) -> Optional[QuotaLimit]:
        return next((lim for lim in self.limits if lim.name == name), None)

    @classmethod
    def from_response(cls, data: Mapping[str, Any], headers: Mapping[str, str]) -> "QuotaResult":
        """Reads a 200 answer. Raises ValueError when it is not a quota answer at all (no
        boolean `allowed`)."""
        if not isinstance(data, Mapping) or not isinstance(data.get("allowed"), bool):
            raise ValueError("the answer has no boolean `allowed`")
        limits: List[QuotaLimit] = []
        for item in data.get("limits") or []:
            if isinstance(item, Mapping):
                limits.append(QuotaLimit.from_json(item))
        reason = data.get("reason")
        status = data.get("status")
        return cls(
            allowed=data["allowed"],
            reason=reason if isinstance(reason, str) and reason else None,
            status=status if isinstance(status, str) and status else ("ok" if data["allowed"] else "exceeded"),
            plan=data.get("plan") if isinstance(data.get("plan"), str) else None,
            limits=tuple(limits),
            requires_upgrade=data.get("requires_upgrade") is True,
            stale=data.get("stale") is True,
            header_limit=_number(headers.get("x-quota-limit")),
            header_remaining=_number(headers.get("x-quota-remaining")),
            header_reset=headers.get("x-quota-reset"),
            raw=dict(data),
        )

    @classmethod
    def unavailable(cls, allowed: bool, error: str) -> "QuotaResult":
        return cls(
            allowed=allowed,
            reason=None if allowed else UNAVAILABLE,
            status="unknown",
            fallback=True,
            error=error,
        )


class QuotaExceeded(Exception):
    """Raised by the metering helpers when the quota check says no; `result` has the answer."""

    def __init__(self, result: QuotaResult):
        super().__init__(f"quota check refused the call: {result.reason or 'not allowed'} (status {result.status})")
        self.result = result


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else number
    return None
