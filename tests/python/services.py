"""Live Tally services for Python tests, started by `tally-devstack` (tests/src/bin/devstack.rs):
the real `tally-ingest` (and, when asked, the real `tally-aggregator`) on free loopback ports,
on a private Kafka topic and a private ClickHouse database of the local stack, with freshly
generated keys.

    import services

    with services.Services(aggregator=True) as tally:
        tally.request("POST", "/v1/batch", key=tally.key("ingest"), json_body={"batch": [...]})

or, as a pytest fixture shared by a module's tests:

    tally = services.fixture("tally", scope="module", aggregator=True)

    def test_something(tally): ...

Everything a `Services` created is removed when it stops: `tally-devstack` ends the services
(SIGTERM, then SIGKILL after a grace period), deletes the topics and the consumer group and
drops the database, even when a test failed; it does the same when this process dies, since
its stdin then closes.

Environment:
  TALLY_TEST_KAFKA        Kafka bootstrap servers (default 127.0.0.1:9092)
  TALLY_TEST_CLICKHOUSE   ClickHouse HTTP endpoint (default http://127.0.0.1:8123)
  TALLY_DEVSTACK_BIN      the devstack binary; by default the debug build under
                          $CARGO_TARGET_DIR, or the newer of ./target and ~/.cache/tally/target
The services run with every TALLY_* and OTEL_* variable removed from their environment, so
their settings are exactly the ones written here (`env=` adds variables back).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping

ROOT = pathlib.Path(__file__).resolve().parents[2]


def binary(name: str) -> pathlib.Path:
    """The path of a built Tally binary (`tally-devstack`, `tally-ingest`, ...).

    `TALLY_DEVSTACK_BIN` (the name upper-cased, `-` as `_`, less the `tally-` prefix) names it
    explicitly. Otherwise the debug build under `$CARGO_TARGET_DIR` when that is set (as
    `make test` sets it), else the newer of the repository's `target/` and
    `~/.cache/tally/target` (the Makefile's default).
    """
    override = os.environ.get(f"TALLY_{name.removeprefix('tally-').upper().replace('-', '_')}_BIN")
    if override:
        return pathlib.Path(override)
    if os.environ.get("CARGO_TARGET_DIR"):
        targets = [pathlib.Path(os.environ["CARGO_TARGET_DIR"])]
    else:
        targets = [ROOT / "target", pathlib.Path.home() / ".cache/tally/target"]
    built = [t / "debug" / name for t in targets if (t / "debug" / name).is_file()]
    if not built:
        raise FileNotFoundError(f"{name} is not built under {[str(t) for t in targets]}; run `make test` or "
                                "`cargo build --workspace` first")
    return max(built, key=lambda path: path.stat().st_mtime)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def deep_merge(base: dict, override: Mapping) -> dict:
    """`base` with `override` laid over it, nested tables merged key by key."""
    merged = copy.deepcopy(base)
    for name, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), dict):
            merged[name] = deep_merge(merged[name], value)
        else:
            merged[name] = copy.deepcopy(value)
    return merged


@dataclasses.dataclass
class Project:
    """A configured project: its id and one plain-text key per scope (`ingest`, `read`,
    `admin`), plus `all`, a key holding every scope."""

    id: str
    keys: dict[str, str]


@dataclasses.dataclass
class Response:
    status: int
    headers: Mapping[str, str]  # an email.message.Message: lookups ignore case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ServiceError(RuntimeError):
    """A service did not start, stop or restart; the message ends with its log."""


class Services:
    """A private Tally run by `tally-devstack`. A context manager; `start()` and `stop()` also
    work on their own.

    Parameters (all keyword-only; each is a field of the devstack spec):
      aggregator: also run `tally-aggregator` (it applies the schema and folds events into
        ClickHouse). Without it the schema is still applied (unless `migrate=False`), so the
        read routes answer, but nothing is folded.
      migrate: without the aggregator, apply the ClickHouse migrations (default True).
      projects: the projects to configure: ids, or `{"id": "b", "redact": {...}}`. Default:
        "a" and "b". Each gets a random key per scope; see `key()`.
      partitions: partitions of the private event topic.
      brokers, clickhouse: the Kafka bootstrap servers and ClickHouse HTTP URL (default the
        local stack's).
      config_files: config files both services read before the generated one.
      ingest_config, aggregator_config: fields laid over the generated config of each service,
        nested tables merged (e.g. `{"limits": {"max_batch_events": 10}}`).
      env: extra environment of both services (e.g. `{"RUST_LOG": "debug"}`).
      ready_timeout: seconds each service has to answer `/readyz` with 200.
      stop_timeout: seconds of graceful shutdown before a service is killed.
      log_dir: where the services' logs and configs go; default a temporary folder removed
        on stop unless a service failed (then its path is in the error).

    Attributes once started: `url` (ingest's base URL), `aggregator_url` (or None),
    `topic`, `dead_letter_topic`, `quota_topic`, `alerts_topic`, `database`, `group_id`,
    `brokers`, `clickhouse`, `projects` (id -> Project), `ingest_settings` (ingest's settings
    in effect), `log_dir`.
    """

    def __init__(
        self,
        *,
        aggregator: bool = False,
        migrate: bool = True,
        projects: Iterable[str | Mapping] = ("a", "b"),
        partitions: int = 3,
        brokers: str | None = None,
        clickhouse: str | None = None,
        config_files: Iterable[str | os.PathLike] = (),
        ingest_config: Mapping | None = None,
        aggregator_config: Mapping | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        log_dir: str | os.PathLike | None = None,
    ):
        self.spec: dict[str, Any] = {
            "aggregator": aggregator,
            "migrate": migrate,
            "projects": list(projects),
            "partitions": partitions,
            "config_files": [str(f) for f in config_files],
            "ingest_config": dict(ingest_config or {}),
            "aggregator_config": dict(aggregator_config or {}),
            "env": dict(env or {}),
            "ready_timeout_secs": ready_timeout,
            "stop_timeout_secs": stop_timeout,
        }
        for name, value in (("brokers", brokers), ("clickhouse", clickhouse), ("log_dir", log_dir)):
            if value is not None:
                self.spec[name] = str(value)
        self.stop_timeout = stop_timeout
        self._devstack: subprocess.Popen | None = None
        self.url: str | None = None
        self.aggregator_url: str | None = None
        self.projects: dict[str, Project] = {}

    # ----- keys and requests -----

    def key(self, scope: str = "all", project: str | None = None) -> str:
        """The plain-text key of `project` (default: the first one) with `scope`:
        `ingest`, `read`, `admin`, or `all` (every scope)."""
        return self.projects[project or next(iter(self.projects))].keys[scope]

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        json_body: Any = None,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        base: str | None = None,
    ) -> Response:
        """One HTTP request to ingest (or to `base`, e.g. `aggregator_url`); any status is
        returned, not raised. `key` becomes `Authorization: Bearer`; `json_body` is sent as
        `application/json`. A raw `body` without a `Content-Type` header gets urllib's
        `application/x-www-form-urlencoded`: name the type you mean."""
        all_headers = dict(headers or {})
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        request = urllib.request.Request((base or self.url) + path, data=body, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return Response(answer.status, answer.headers, answer.read())
        except urllib.error.HTTPError as answer:
            return Response(answer.code, answer.headers, answer.read())

    def clickhouse_query(self, sql: str, database: str | None = None) -> str:
        """Runs SQL on the ClickHouse server (in this instance's database unless `database`
        says otherwise); returns the answer's text (append `FORMAT JSON` and parse it)."""
        params = urllib.parse.urlencode({"database": database or self.database})
        request = urllib.request.Request(f"{self.clickhouse}/?{params}", data=sql.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.read().decode()

    # ----- lifecycle -----

    def __enter__(self) -> "Services":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> "Services":
        self._devstack = subprocess.Popen(
            [str(binary("tally-devstack")), "--spec", json.dumps(self.spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
        )
        described = self._answer()
        if "error" in described:
            self._devstack.wait(30)
            self._devstack = None
            raise ServiceError(described["error"])
        self._describe(described)
        return self

    def _describe(self, described: dict) -> None:
        self.url = described["ingest_url"]
        self.aggregator_url = described["aggregator_url"]
        self.brokers, self.clickhouse = described["brokers"], described["clickhouse"]
        self.database, self.group_id = described["database"], described["group_id"]
        topics = described["topics"]
        self.topic, self.dead_letter_topic = topics["events_topic"], topics["dead_letter_topic"]
        self.quota_topic, self.alerts_topic = topics["quota_topic"], topics["alerts_topic"]
        self.projects = {pid: Project(pid, p["keys"]) for pid, p in described["projects"].items()}
        self.ingest_settings = described["ingest_config"]
        self.log_dir = pathlib.Path(described["log_dir"])

    def _answer(self) -> dict:
        line = self._devstack.stdout.readline()
        if not line:
            raise ServiceError(f"tally-devstack ended without an answer (exit {self._devstack.wait(30)})")
        return json.loads(line)

    def _command(self, command: str) -> None:
        assert self._devstack is not None, "the stack is not running"
        self._devstack.stdin.write(command + "\n")
        self._devstack.stdin.flush()
        answer = self._answer()
        if not answer.get("ok"):
            raise ServiceError(f"{command}: {answer.get('error')}")

    def kill(self, service: str = "ingest") -> None:
        """SIGKILL to `ingest` or `aggregator`: no shutdown, requests in flight cut off."""
        self._command(f"kill {service}")

    def start_service(self, service: str = "ingest") -> None:
        """Starts `ingest` or `aggregator` again on the port it had, and waits until ready."""
        self._command(f"start {service}")

    def stop_service(self, service: str = "ingest") -> None:
        """SIGTERM to `ingest` or `aggregator`: a graceful shutdown."""
        self._command(f"stop {service}")

    def stop(self) -> None:
        """Ends the services, deletes the topics and consumer group and drops the database.
        Safe to call twice."""
        devstack, self._devstack = self._devstack, None
        if devstack is None:
            return
        try:
            devstack.stdin.close()  # end of input: the devstack stops and cleans up
        except OSError:
            pass
        try:
            devstack.wait(2 * self.stop_timeout + 60)
        except subprocess.TimeoutExpired:
            devstack.kill()
            devstack.wait(10)
        devstack.stdout.close()


def fixture(name: str = "tally", scope: str = "module", **options):
    """A pytest fixture named `name` that yields a started `Services(**options)` and stops it
    after the last test of its `scope`. Assign it at module level:

        tally = services.fixture("tally", aggregator=True)
    """
    import pytest

    @pytest.fixture(name=name, scope=scope)
    def _services():
        with Services(**options) as started:
            yield started

    return _services
