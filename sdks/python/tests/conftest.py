from __future__ import annotations

import pathlib
import sys
from typing import Any, Callable, List

import pytest

HERE = pathlib.Path(__file__).resolve().parent
SDK = HERE.parent
REPO = SDK.parents[1]
for path in (SDK / "src", HERE):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import tally  # noqa: E402
from fakes import FakeServer, MemoryTransport  # noqa: E402


@pytest.fixture
def fake():
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def make_client() -> Callable[..., tally.Tally]:
    """Clients for unit tests: no exit hooks, quick backoff; closed after the test."""
    made: List[tally.Tally] = []

    def make(**options: Any) -> tally.Tally:
        settings = dict(api_key="test-key", flush_at_exit=False, handle_signals=False, backoff_base=0.02,
                        backoff_max=0.1, request_timeout=5.0)
        settings.update(options)
        client = tally.Tally(**settings)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close(timeout=2)


@pytest.fixture
def memory():
    return MemoryTransport()


def pytest_configure(config):
    config.addinivalue_line("markers", "live: runs against the real tally-ingest and tally-aggregator")


@pytest.fixture(scope="session")
def stack():
    """One private Tally (ingest + aggregator on real Kafka and ClickHouse) for the session."""
    import live

    started = live.start()
    yield started
    live.stop(started)
