"""Signal handling that never takes a lock in the handler: the handler only queues the signal's
number (``queue.SimpleQueue.put`` is reentrant) and a thread of its own acts on it.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread is,
and a second signal can run a second handler inside the first. A handler that sets a
``threading.Event`` takes the Event's lock, which is not reentrant: if the main thread (or the
first handler) held it at that moment, the process deadlocks. A worker that got SIGTERM from its
supervisor and from its process group at once could hang so, its stop never begun."""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable, Iterable

__all__ = ["relay_signals"]

log = logging.getLogger("conveyor.signals")


_received: queue.SimpleQueue[int] = queue.SimpleQueue()
_acts: dict[int, Callable[[int], None]] = {}  #: signal number -> what the relay thread does on it
_relay: threading.Thread | None = None


def relay_signals(signums: Iterable[int], act: Callable[[int], None]) -> None:
    """Install handlers for ``signums`` (call from the main thread) that hand each signal to
    ``act``, called on the process's one relay thread in the order the signals came; a later
    call for the same signal replaces its ``act``. An error in ``act`` is logged."""
    global _relay
    if _relay is None or not _relay.is_alive():
        _relay = threading.Thread(target=_run_relay, name="conveyor-signals", daemon=True)
        _relay.start()
    for signum in signums:
        _acts[signum] = act
        signal.signal(signum, _handler)


def _handler(signum: int, _frame: object) -> None:
    _received.put(signum)  # SimpleQueue.put is reentrant and takes no lock of ours: safe here


def _run_relay() -> None:
    while True:
        signum = _received.get()
        act = _acts.get(signum)
        if act is None:
            continue
        try:
            act(signum)
        except Exception:
            log.exception("acting on %s failed", signal.Signals(signum).name)
