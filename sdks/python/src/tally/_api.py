"""What every request to Tally's HTTP API shares: the SDK's name and version (sent as
User-Agent and in each batch's `sdk` field) and the `{"error": ...}` body of a refused
request."""

from __future__ import annotations

import json
from typing import Optional, Tuple

from .transport import HttpResponse

SDK_NAME = "tally-py"
SDK_VERSION = "0.1.0"


def _error_of(answer: Optional[HttpResponse]) -> Tuple[Optional[str], Optional[str]]:
    """The `{"error": {"code", "message"}}` of an error answer, if it has one."""
    if answer is None:
        return None, None
    try:
        error = json.loads(answer.body).get("error") or {}
        return error.get("code"), error.get("message")
    except (ValueError, AttributeError, TypeError):
        return None, answer.body[:200].decode("utf-8", "replace") or None
