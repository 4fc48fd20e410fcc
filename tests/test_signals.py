"""conveyor.signals: a signal is acted on off its handler, so an act that takes a lock the
interrupted main thread holds waits for it instead of deadlocking the process."""

from __future__ import annotations

import os
import queue
import signal
import threading
from collections.abc import Iterator

import pytest

from conveyor.signals import relay_signals


@pytest.fixture
def restore_sigusr2() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers can only be installed from the main thread")
    before = signal.getsignal(signal.SIGUSR2)
    yield
    signal.signal(signal.SIGUSR2, before)


def test_a_signal_is_acted_on_by_the_relay_thread_even_while_the_main_thread_holds_the_acts_lock(
    restore_sigusr2: None,
) -> None:
    held = threading.Lock()  # not reentrant, like a threading.Event's own lock
    acted: queue.SimpleQueue[tuple[int, str]] = queue.SimpleQueue()

    def act(signum: int) -> None:
        with held:
            acted.put((signum, threading.current_thread().name))

    relay_signals([signal.SIGUSR2], act)
    with held:  # an act run inside the handler, on this thread, would block here for ever
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)
        with pytest.raises(queue.Empty):
            acted.get(timeout=0.2)
    assert acted.get(timeout=10) == (signal.SIGUSR2, "conveyor-signals")
    assert acted.get(timeout=10) == (signal.SIGUSR2, "conveyor-signals")


def test_an_act_that_raises_is_logged_and_later_signals_still_arrive(
    restore_sigusr2: None, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[int] = []
    arrived = threading.Event()

    def act(signum: int) -> None:
        seen.append(signum)
        arrived.set()
        if len(seen) == 1:
            raise RuntimeError("boom")

    relay_signals([signal.SIGUSR2], act)
    os.kill(os.getpid(), signal.SIGUSR2)
    assert arrived.wait(10)
    arrived.clear()
    os.kill(os.getpid(), signal.SIGUSR2)
    assert arrived.wait(10)
    assert seen == [signal.SIGUSR2, signal.SIGUSR2]
    assert "acting on SIGUSR2 failed" in caplog.text
