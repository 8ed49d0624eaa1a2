"""Live Tally services for Python tests: the real `tally-ingest` (and, when asked, the real
`tally-aggregator`) binaries on free loopback ports, on a private Kafka topic and a private
ClickHouse database of the local stack, with freshly generated keys.

    import services

    with services.Services(aggregator=True) as tally:
        tally.request("POST", "/v1/batch", key=tally.key("ingest"), json_body={"batch": [...]})

or, as a pytest fixture shared by a module's tests:

    tally = services.fixture("tally", scope="module", aggregator=True)

    def test_something(tally): ...

Everything a `Services` created is removed when it stops: the processes are ended (SIGTERM,
then SIGKILL after a grace period), its topics (events, dead letters, quota, alerts) and the
aggregator's consumer group are deleted and the database is dropped, even when a test failed.

Environment:
  TALLY_TEST_KAFKA        Kafka bootstrap servers (default 127.0.0.1:9092)
  TALLY_TEST_CLICKHOUSE   ClickHouse HTTP endpoint (default http://127.0.0.1:8123)
  TALLY_INGEST_BIN, TALLY_AGGREGATOR_BIN
                          the binaries; by default the debug build under $CARGO_TARGET_DIR,
                          or the newer of ./target and ~/.cache/tally/target
The services run with every TALLY_* and OTEL_* variable removed from their environment, so
their settings are exactly the ones written here (`env=` adds variables back).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import pathlib
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Iterable, Mapping

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCOPES = ("ingest", "read", "admin")


def kafka_brokers() -> str:
    """The local stack's Kafka (`TALLY_TEST_KAFKA` overrides it)."""
    return os.environ.get("TALLY_TEST_KAFKA", "127.0.0.1:9092")


def clickhouse_url() -> str:
    """The local stack's ClickHouse HTTP endpoint (`TALLY_TEST_CLICKHOUSE` overrides it)."""
    return os.environ.get("TALLY_TEST_CLICKHOUSE", "http://127.0.0.1:8123")


def binary(name: str) -> pathlib.Path:
    """The path of a built Tally binary (`tally-ingest`, `tally-aggregator`, ...).

    `TALLY_INGEST_BIN` / `TALLY_AGGREGATOR_BIN` (the name upper-cased, `-` as `_`, less the
    `tally-` prefix) name it explicitly. Otherwise the debug build under `$CARGO_TARGET_DIR`
    when that is set (as `make test` sets it), else the newer of the repository's `target/`
    and `~/.cache/tally/target` (the Makefile's default).
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


def hash_key(key: str) -> str:
    """A key as ingest's config stores it: the hex SHA-256 of the key."""
    return hashlib.sha256(key.encode()).hexdigest()


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


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def to_toml(config: Mapping) -> str:
    """A config as TOML: one `key = value` line per top-level field, tables inline."""
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in config.items())


@dataclasses.dataclass
class Project:
    """A configured project: its id and one plain-text key per scope (`ingest`, `read`,
    `admin`), plus `all`, a key holding every scope. Only their hashes reach the config."""

    id: str
    keys: dict[str, str]
    redact: dict[str, bool] = dataclasses.field(default_factory=dict)

    def config(self) -> dict:
        entries = [{"sha256": hash_key(self.keys[s]), "scopes": [s]} for s in SCOPES]
        entries.append({"sha256": hash_key(self.keys["all"]), "scopes": list(SCOPES)})
        project = {"id": self.id, "keys": entries}
        if self.redact:
            project["redact"] = dict(self.redact)
        return project


def new_project(project_id: str, redact: Mapping[str, bool] | None = None) -> Project:
    """A project with fresh random keys for every scope."""
    keys = {s: f"tally_test_{s}_{secrets.token_hex(16)}" for s in (*SCOPES, "all")}
    return Project(project_id, keys, dict(redact or {}))


@dataclasses.dataclass
class Response:
    status: int
    headers: Mapping[str, str]  # an email.message.Message: lookups ignore case
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class ServiceError(RuntimeError):
    """A service did not start or become ready; the message ends with its log."""


class _Process:
    """One child process with its log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: pathlib.Path):
        self.name, self.log_path = name, log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, grace: float) -> int | None:
        """SIGTERM (a graceful shutdown), then SIGKILL after `grace` seconds."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()
        return self.popen.returncode


class Services:
    """A private Tally: `tally-ingest`, optionally `tally-aggregator`, their topics, database
    and keys. A context manager; `start()` and `stop()` also work on their own.

    Parameters (all keyword-only):
      aggregator: also run `tally-aggregator` (it applies the schema and folds events into
        ClickHouse). Without it the schema is applied with `tally-aggregator migrate`, so the
        read routes answer (404) but nothing is folded. The topics are created here either way.
      migrate: without the aggregator, apply the ClickHouse migrations (default True).
      projects: the projects to configure: ids, or `Project`s (e.g. `new_project("b",
        redact={"drop_content": True})`). Default: "a" and "b". Each gets a random key
        per scope; see `key()`.
      partitions: partitions of the private event topic.
      brokers, clickhouse: the Kafka bootstrap servers and ClickHouse HTTP URL (default the
        local stack's; see `kafka_brokers()` and `clickhouse_url()`).
      ingest_config, aggregator_config: fields laid over the generated TOML of each service,
        nested tables merged (e.g. `{"limits": {"max_batch_events": 10}}`).
      env: extra environment of both services (e.g. `{"RUST_LOG": "debug"}`).
      ready_timeout: seconds each service has to answer `/readyz` with 200.
      stop_timeout: seconds of graceful shutdown before a service is killed.
      log_dir: where the services' logs and configs go; default a temporary folder removed
        on stop unless a service failed to start (then its path is in the error).

    Attributes once started: `url` (ingest's base URL), `aggregator_url` (or None),
    `topic`, `dead_letter_topic`, `quota_topic`, `alerts_topic`, `database`, `group_id`,
    `brokers`, `clickhouse`, `projects` (id -> Project), `log_dir`. Topic names given in
    `ingest_config`/`aggregator_config` replace these and are created and deleted the same way.
    """

    def __init__(
        self,
        *,
        aggregator: bool = False,
        migrate: bool = True,
        projects: Iterable[str | Project] = ("a", "b"),
        partitions: int = 3,
        brokers: str | None = None,
        clickhouse: str | None = None,
        ingest_config: Mapping | None = None,
        aggregator_config: Mapping | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 60.0,
        stop_timeout: float = 10.0,
        log_dir: str | os.PathLike | None = None,
    ):
        name = secrets.token_hex(8)
        self.with_aggregator, self.migrate = aggregator, migrate
        self.projects = {p.id: p for p in (p if isinstance(p, Project) else new_project(p) for p in projects)}
        self.partitions = partitions
        self.brokers = brokers or kafka_brokers()
        self.clickhouse = (clickhouse or clickhouse_url()).rstrip("/")
        self.topic = f"tally.test.{name}"
        self.dead_letter_topic = f"tally.test.{name}.dlq"
        self.quota_topic = f"tally.test.{name}.quota"
        self.alerts_topic = f"tally.test.{name}.alerts"
        self.database = f"tally_test_{name}"
        self.group_id = f"tally-test-{name}"
        self.ingest_overrides = dict(ingest_config or {})
        self.aggregator_overrides = dict(aggregator_config or {})
        self.extra_env = dict(env or {})
        self.ready_timeout, self.stop_timeout = ready_timeout, stop_timeout
        self._own_log_dir = log_dir is None
        self.log_dir = pathlib.Path(log_dir) if log_dir else None
        self.url: str | None = None
        self.aggregator_url: str | None = None
        self._processes: list[_Process] = []
        self._created = False
        self._ingest: dict = {}
        self._aggregator: dict = {}
        self._topics: dict[str, dict] = {}

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
        if self.log_dir is None:
            self.log_dir = pathlib.Path(tempfile.mkdtemp(prefix="tally-services-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._created = True
        try:
            self._ingest = self._ingest_config()
            if self.with_aggregator or self.migrate:
                self._aggregator = self._aggregator_config()
            self._topics = self._topic_specs()
            self._create_topics()
            if self.with_aggregator:
                port = self._launch("tally-aggregator", self._aggregator, ["run"])
                self.aggregator_url = f"http://127.0.0.1:{port}"
                self._wait_ready("tally-aggregator", self.aggregator_url)
            elif self.migrate:
                self._migrate()
            port = self._launch("tally-ingest", self._ingest, [])
            self.url = f"http://127.0.0.1:{port}"
            self._wait_ready("tally-ingest", self.url)
        except BaseException:
            self._own_log_dir = False  # keep the logs the error points to
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Ends the processes, then deletes the topics and consumer group and drops the
        database. Safe to call twice; cleanup errors are ignored."""
        failures = []
        for process in reversed(self._processes):
            process.stop(self.stop_timeout)
            if process.popen.returncode not in (0, -signal.SIGTERM):
                failures.append(process.name)
        self._processes.clear()
        if self._created:
            self._created = False
            self._remove_kafka_state()
            try:
                self.clickhouse_query(f"DROP DATABASE IF EXISTS {self.database}", database="default")
            except (OSError, urllib.error.URLError):
                pass
        if self.log_dir and self._own_log_dir and not failures:
            for path in self.log_dir.iterdir():
                path.unlink()
            self.log_dir.rmdir()
            self.log_dir = None

    # ----- internals -----

    def _kafka(self, name: str) -> dict:
        kafka = {
            "brokers": self.brokers,
            "events_topic": self.topic,
            "dead_letter_topic": self.dead_letter_topic,
            "events_partitions": self.partitions,
            "replication_factor": 1,
        }
        private = {"quota_topic": self.quota_topic, "alerts_topic": self.alerts_topic}
        if _accepts(name, {"kafka": private}):
            kafka.update(private)
        return kafka

    def _topic_specs(self) -> dict[str, dict]:
        """Every topic the services' configs name: name -> partitions and topic config, as
        `KafkaConfig::ensure_topics` creates them."""
        specs: dict[str, dict] = {}
        for config in (self._ingest, self._aggregator):
            kafka = config.get("kafka", {})
            if "events_topic" in kafka:
                specs[kafka["events_topic"]] = {"partitions": kafka.get("events_partitions", self.partitions)}
            if "dead_letter_topic" in kafka:
                specs[kafka["dead_letter_topic"]] = {"partitions": 1}
            if "quota_topic" in kafka:
                compacted = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
                specs[kafka["quota_topic"]] = {"partitions": 1, "config": compacted}
            if "alerts_topic" in kafka:
                specs[kafka["alerts_topic"]] = {"partitions": 1}
        return specs

    def _ingest_config(self) -> dict:
        base = {
            "workers": 2,
            "shutdown_timeout_secs": 5,
            "kafka": self._kafka("tally-ingest"),
            "clickhouse": {"url": self.clickhouse, "database": self.database},
            "projects": [p.config() for p in self.projects.values()],
        }
        return deep_merge(base, self.ingest_overrides)

    def _aggregator_config(self) -> dict:
        base = {
            "group_id": self.group_id,
            "batch_max_wait_ms": 50,
            "max_retry_backoff_ms": 1000,
            "create_topic": True,
            "kafka": self._kafka("tally-aggregator"),
            "clickhouse": {"url": self.clickhouse, "database": self.database},
        }
        return deep_merge(base, self.aggregator_overrides)

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TALLY_", "OTEL_"))}
        env.setdefault("RUST_LOG", "info")
        env.update(self.extra_env)
        return env

    def _write_config(self, name: str, config: dict) -> pathlib.Path:
        path = self.log_dir / f"{name}.toml"
        path.write_text(to_toml(config))
        return path

    def _launch(self, name: str, config: dict, args: list[str], attempts: int = 3) -> int:
        """Starts a service on a free port, retrying when another process took the port
        between choosing and binding it. Returns the port."""
        for attempt in range(attempts):
            port = free_port()
            config = dict(config, listen=f"127.0.0.1:{port}")
            path = self._write_config(name, config)
            process = _Process(name, [str(binary(name)), "--config", str(path), *args], self._env(),
                               self.log_dir / f"{name}.log")
            self._processes.append(process)
            # A port lost to a race shows as an early exit with "cannot listen" / "in use".
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and process.alive():
                time.sleep(0.05)
            if process.alive():
                return port
            self._processes.remove(process)
            process.stop(0)
            tail = process.log_tail()
            if "in use" not in tail.lower() or attempt == attempts - 1:
                raise ServiceError(f"{name} exited with {process.popen.returncode}; log {process.log_path}:\n{tail}")
        raise AssertionError("unreachable")

    def _wait_ready(self, name: str, url: str) -> None:
        process = next(p for p in self._processes if p.name == name)
        deadline = time.monotonic() + self.ready_timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if not process.alive():
                raise ServiceError(f"{name} exited with {process.popen.returncode}; log {process.log_path}:\n"
                                   + process.log_tail())
            try:
                answer = self.request("GET", "/readyz", base=url, timeout=5)
                if answer.status == 200:
                    return
                last = f"{answer.status} {answer.body[:200]!r}"
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        raise ServiceError(f"{name} not ready after {self.ready_timeout} s ({last}); log {process.log_path}:\n"
                           + process.log_tail())

    def _migrate(self) -> None:
        name = "tally-aggregator"
        path = self._write_config(f"{name}-migrate", self._aggregator)
        result = subprocess.run([str(binary(name)), "--config", str(path), "migrate"], env=self._env(),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ServiceError(f"{name} migrate failed ({result.returncode}):\n{result.stdout}{result.stderr}")

    def _admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.brokers, "log_level": 3})

    def _create_topics(self) -> None:
        from confluent_kafka import KafkaError
        from confluent_kafka.admin import NewTopic

        topics = [NewTopic(t, spec["partitions"], 1, config=spec.get("config", {})) for t, spec in self._topics.items()]
        admin = self._admin()  # held until every future is done: a dropped client cancels them
        for topic, future in admin.create_topics(topics, operation_timeout=30).items():
            try:
                future.result(timeout=60)
            except Exception as err:  # noqa: BLE001 - a KafkaException wrapping the cause
                code = err.args[0].code() if err.args and hasattr(err.args[0], "code") else None
                if code != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise ServiceError(f"cannot create topic {topic}: {err}") from err

    def _remove_kafka_state(self) -> None:
        """Deletes the topics and the consumer group; what does not exist is skipped."""
        try:
            admin = self._admin()
            topics = list(self._topics) or [self.topic, self.dead_letter_topic]
            futures = admin.delete_topics(topics, operation_timeout=30)
            if self.with_aggregator:
                futures.update(admin.delete_consumer_groups([self.group_id], request_timeout=30))
            for future in futures.values():
                try:
                    future.result(timeout=60)
                except Exception:  # noqa: BLE001 - unknown topic or group: nothing to remove
                    pass
        except Exception:  # noqa: BLE001 - cleanup must not hide the test's own outcome
            pass


_ACCEPTS: dict[tuple, bool] = {}


def _accepts(name: str, fields: dict) -> bool:
    """Whether the built `name` binary accepts these config fields (a binary older than the
    source rejects fields added since; then the services run without them)."""
    path = binary(name)
    key = (str(path), path.stat().st_mtime_ns, json.dumps(fields, sort_keys=True))
    if key not in _ACCEPTS:
        with tempfile.TemporaryDirectory(prefix="tally-probe-") as folder:
            config = pathlib.Path(folder) / "probe.toml"
            # Nothing listens on a port just found free: `migrate` fails fast after reading the config.
            probe = deep_merge(fields, {"clickhouse": {"url": f"http://127.0.0.1:{free_port()}"}})
            config.write_text(to_toml(probe))
            args = ["--print-config"] if name == "tally-ingest" else ["migrate"]
            env = {k: v for k, v in os.environ.items() if not k.startswith(("TALLY_", "OTEL_"))}
            result = subprocess.run([str(path), "--config", str(config), *args], env=env, stdin=subprocess.DEVNULL,
                                    capture_output=True, text=True, timeout=60)
            _ACCEPTS[key] = "unknown field" not in result.stdout + result.stderr
    return _ACCEPTS[key]


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
