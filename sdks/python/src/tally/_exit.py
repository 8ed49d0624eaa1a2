"""The flush at process exit: one atexit hook and one SIGTERM handler for every live client.

The SIGTERM handler flushes every client (each for at most its `exit_timeout`), then does
what the signal would have done without it: it calls the handler that was installed before
(a Python callable), does nothing if the signal was ignored, or restores the default action
and re-sends the signal to the process, so the exit status still says "killed by SIGTERM".
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import threading
import weakref
from typing import Any, Dict

log = logging.getLogger("tally")

_clients: "weakref.WeakSet[Any]" = weakref.WeakSet()
_lock = threading.RLock()  # re-entrant: the signal handler may run while the main thread holds it
_atexit_installed = False
_previous: Dict[int, Any] = {}
_SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None),) if s is not None)


def register(client: Any, handle_signals: bool) -> None:
    global _atexit_installed
    with _lock:
        _clients.add(client)
        if not _atexit_installed:
            atexit.register(_at_exit)
            if hasattr(os, "register_at_fork"):
                os.register_at_fork(after_in_child=_after_fork_in_child)
            _atexit_installed = True
    if handle_signals:
        install_signal_handlers()


def unregister(client: Any) -> None:
    with _lock:
        _clients.discard(client)


def install_signal_handlers() -> bool:
    """Installs the SIGTERM handler, chaining the one in place. Only the main thread can
    install signal handlers; elsewhere this does nothing and returns False."""
    if threading.current_thread() is not threading.main_thread():
        return False
    for signum in _SIGNALS:
        current = signal.getsignal(signum)
        if current is _on_signal:
            continue
        try:
            signal.signal(signum, _on_signal)
        except (ValueError, OSError):  # not allowed here (e.g. an embedded interpreter)
            return False
        _previous[signum] = current
    return True


def _close_all() -> None:
    for client in list(_clients):
        try:
            client.close(client.exit_timeout)
        except Exception:  # exiting: log and go on with the next client
            log.exception("tally: flush at exit failed")


def _at_exit() -> None:
    _close_all()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._after_fork_in_child()


def _on_signal(signum: int, frame: Any) -> None:
    _close_all()
    previous = _previous.get(signum, signal.SIG_DFL)
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL, or None (a handler not installed from Python): the default action
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
