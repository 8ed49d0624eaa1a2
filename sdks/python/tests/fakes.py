"""Test doubles: a scripted HTTP server on loopback standing in for ingest in unit tests, and
an in-memory transport."""

from __future__ import annotations

import collections
import gzip
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Deque, Dict, List, Optional, Union

from tally.transport import HttpResponse


@dataclass
class Recorded:
    method: str
    path: str
    headers: Dict[str, str]
    raw: bytes
    at: float
    json: Any = None

    @property
    def events(self) -> List[dict]:
        return (self.json or {}).get("batch", [])

    @property
    def event_ids(self) -> List[str]:
        return [e["event_id"] for e in self.events]


@dataclass
class Reply:
    status: int = 200
    headers: Dict[str, str] = field(default_factory=dict)
    body: Any = None  # JSON-able, or bytes
    action: Optional[str] = None  # "drop": close the connection without answering; "hang": wait for release()


def accept_all(request: Recorded) -> Reply:
    if request.path == "/v1/batch":
        return Reply(200, body={"accepted": len(request.events), "rejected": []})
    return Reply(404, body={"error": {"code": "not_found", "message": "no such route"}})


def decode_body(raw: bytes, headers: Dict[str, str]) -> Any:
    if headers.get("content-encoding") == "gzip":
        raw = gzip.decompress(raw)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


class FakeServer:
    """Records every request; answers with the next scripted `Reply` (or the result of a
    callable), else with `default`. Polling helpers wait for conditions with a deadline."""

    def __init__(self, default: Callable[[Recorded], Reply] = accept_all):
        self.default = default
        self.script: Deque[Union[Reply, Callable[[Recorded], Reply]]] = collections.deque()
        self.requests: List[Recorded] = []
        self.cond = threading.Condition()
        self._release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                recorded = Recorded(self.command, self.path, headers, raw, time.monotonic(),
                                    decode_body(raw, headers))
                with fake.cond:
                    fake.requests.append(recorded)
                    step = fake.script.popleft() if fake.script else fake.default
                    fake.cond.notify_all()
                reply = step(recorded) if callable(step) else step
                if reply.action == "hang":
                    fake._release.wait(60)
                if reply.action == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = _handle
            do_GET = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        """Lets every hanging request (and later ones) answer."""
        self._release.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate: Callable[[List[Recorded]], bool], timeout: float = 10.0) -> List[Recorded]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate(self.requests):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"condition not met in {timeout} s; {len(self.requests)} requests")
                self.cond.wait(remaining)
            return list(self.requests)

    def batches(self) -> List[Recorded]:
        with self.cond:
            return [r for r in self.requests if r.path == "/v1/batch"]

    def events(self) -> List[dict]:
        return [e for r in self.batches() for e in r.events]


class MemoryTransport:
    """A transport that answers in memory: batches are accepted (and kept), quota checks get
    `quota_reply` (a dict, an HttpResponse, or an exception to raise)."""

    def __init__(self) -> None:
        self.requests: List[Recorded] = []
        self.quota_reply: Any = {"allowed": True, "reason": None, "status": "ok", "plan": "free", "limits": [],
                                 "requires_upgrade": False, "stale": False}
        self.lock = threading.Lock()

    def send(self, method: str, url: str, body: Optional[bytes], headers: Dict[str, str],
             timeout: float) -> HttpResponse:
        lowered = {k.lower(): v for k, v in headers.items()}
        path = "/" + url.split("/", 3)[3]
        recorded = Recorded(method, path, lowered, body or b"", time.monotonic(), decode_body(body or b"", lowered))
        with self.lock:
            self.requests.append(recorded)
        if path == "/v1/batch":
            return HttpResponse(200, {}, json.dumps({"accepted": len(recorded.events), "rejected": []}).encode())
        reply = self.quota_reply
        if isinstance(reply, BaseException):
            raise reply
        if isinstance(reply, HttpResponse):
            return reply
        return HttpResponse(200, {}, json.dumps(reply).encode())

    def events(self) -> List[dict]:
        with self.lock:
            return [e for r in self.requests if r.path == "/v1/batch" for e in r.events]

    def quota_requests(self) -> List[Recorded]:
        with self.lock:
            return [r for r in self.requests if r.path == "/v1/quota/check"]


class RecordingTransport:
    """Wraps a real transport and keeps every request and its status."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.requests: List[Recorded] = []
        self.statuses: List[Optional[int]] = []
        self.lock = threading.Lock()

    def send(self, method: str, url: str, body: Optional[bytes], headers: Dict[str, str],
             timeout: float) -> HttpResponse:
        lowered = {k.lower(): v for k, v in headers.items()}
        path = "/" + url.split("/", 3)[3]
        recorded = Recorded(method, path, lowered, body or b"", time.monotonic(), decode_body(body or b"", lowered))
        try:
            answer = self.inner.send(method, url, body, headers, timeout)
        except Exception:
            with self.lock:
                self.requests.append(recorded)
                self.statuses.append(None)
            raise
        with self.lock:
            self.requests.append(recorded)
            self.statuses.append(answer.status)
        return answer

    def sent_events(self) -> List[dict]:
        """Every event posted, once each (a resend repeats the same events)."""
        seen: Dict[str, dict] = {}
        with self.lock:
            for request in self.requests:
                if request.path == "/v1/batch":
                    for event in request.events:
                        seen.setdefault(event["event_id"], event)
        return list(seen.values())

    def batch_sizes(self) -> List[int]:
        with self.lock:
            return [len(r.events) for r in self.requests if r.path == "/v1/batch"]
