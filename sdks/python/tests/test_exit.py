"""The flush at process exit, in child processes: a normal exit, SIGTERM with the default
action, SIGINT, SIGTERM with a handler the application installed first, and the bounded wait."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import SDK
from fakes import Reply

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals as on POSIX")

PRELUDE = """
import os, signal, sys
import tally
url, count = sys.argv[1], int(sys.argv[2])
"""


def child(script, url, count):
    env = dict(os.environ, PYTHONPATH=str(SDK / "src"))
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(PRELUDE) + textwrap.dedent(script), url,
                             str(count)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


RECORD_AND_WAIT = """
client = tally.Tally(api_key="k", endpoint=url, flush_interval=3600, flush_at=10_000, exit_timeout=10)
ids = [client.record(tally.Custom(session_id="s", account_id="a", attributes={"i": i})) for i in range(count)]
print("recorded", flush=True)
sys.stdin.readline()  # waits here until killed or told to go on
"""


def test_a_normal_exit_flushes(fake):
    process = child(RECORD_AND_WAIT, fake.url, 30)
    assert process.stdout.readline() == "recorded\n"
    assert fake.requests == []  # nothing was due yet
    out, err = process.communicate("go\n", timeout=30)
    assert process.returncode == 0, err
    assert len(fake.events()) == 30


def test_sigterm_flushes_then_dies_of_sigterm(fake):
    process = child(RECORD_AND_WAIT, fake.url, 40)
    assert process.stdout.readline() == "recorded\n"
    process.send_signal(signal.SIGTERM)
    process.wait(30)
    assert process.returncode == -signal.SIGTERM
    assert [e["attributes"]["i"] for e in fake.events()] == list(range(40))


def test_sigint_flushes_on_the_way_out(fake):
    # Python raises KeyboardInterrupt on SIGINT unless the signal was ignored when it started
    # (as for background jobs); the script asks for that handler so the test does not depend on it.
    script = "signal.signal(signal.SIGINT, signal.default_int_handler)\n" + RECORD_AND_WAIT
    process = child(script, fake.url, 20)
    assert process.stdout.readline() == "recorded\n"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == -signal.SIGINT, err  # an uncaught KeyboardInterrupt ends by the signal
    assert [e["attributes"]["i"] for e in fake.events()] == list(range(20))


def test_sigterm_chains_the_handler_installed_before(fake):
    script = textwrap.dedent("""
    def previous(signum, frame):
        print("previous handler: pending", client.stats().pending, flush=True)
        sys.exit(3)
    signal.signal(signal.SIGTERM, previous)
    """) + RECORD_AND_WAIT
    process = child(script, fake.url, 5)
    assert process.stdout.readline() == "recorded\n"
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 3, err
    assert out == "previous handler: pending 0\n"  # flushed before the application's handler ran
    assert len(fake.events()) == 5


def test_the_wait_at_exit_is_bounded(fake):
    fake.default = lambda r: Reply(200, body={"accepted": 0, "rejected": []}, action="hang")
    script = RECORD_AND_WAIT.replace("exit_timeout=10", "exit_timeout=1")
    process = child(script, fake.url, 3)
    assert process.stdout.readline() == "recorded\n"
    started = time.monotonic()
    out, err = process.communicate("go\n", timeout=30)
    assert time.monotonic() - started < 6
    assert process.returncode == 0
    assert "3 events not delivered" in err
    assert len(fake.batches()) == 1
