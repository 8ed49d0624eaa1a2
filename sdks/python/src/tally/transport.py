"""HTTP for the client. The default uses urllib (standard library only); any object with the
same `send` method can replace it (another HTTP stack, a proxy, a test double)."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional

try:
    from typing import Protocol
except ImportError:  # pragma: no cover
    from typing_extensions import Protocol  # type: ignore

__all__ = ["HttpResponse", "Transport", "TransportError", "UrllibTransport"]


@dataclass
class HttpResponse:
    status: int
    headers: Dict[str, str] = field(default_factory=dict)  # names in lower case
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())


class TransportError(Exception):
    """The request got no HTTP answer: connection refused or reset, timeout, DNS, TLS."""


class Transport(Protocol):
    def send(self, method: str, url: str, body: Optional[bytes], headers: Mapping[str, str],
             timeout: float) -> HttpResponse:
        """Sends one request and returns the answer, whatever its status. Raises
        TransportError when there is no answer."""
        ...


class UrllibTransport:
    """`urllib.request`, honouring the usual proxy environment variables."""

    def __init__(self, opener: Optional[urllib.request.OpenerDirector] = None):
        self._opener = opener or urllib.request.build_opener()

    def send(self, method: str, url: str, body: Optional[bytes], headers: Mapping[str, str],
             timeout: float) -> HttpResponse:
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))
        try:
            with self._opener.open(request, timeout=timeout) as answer:
                return HttpResponse(answer.status, _headers(answer.headers), answer.read())
        except urllib.error.HTTPError as answer:
            try:
                data = answer.read()
            except (OSError, http.client.HTTPException):
                data = b""
            return HttpResponse(answer.code, _headers(answer.headers), data)
        except (urllib.error.URLError, OSError, http.client.HTTPException, socket.timeout) as err:
            raise TransportError(f"{method} {url}: {getattr(err, 'reason', err)}") from err


def _headers(message) -> Dict[str, str]:
    if message is None:
        return {}
    return {name.lower(): value for name, value in message.items()}
