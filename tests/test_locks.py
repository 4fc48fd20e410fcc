"""``app.lock``: a named lock in the store. Exclusive between owners (Lock objects, processes),
non-blocking by default, ``with`` raises LockNotAcquired, expiry frees a dead holder's lock,
and a ``with`` block that outlives the ttl keeps the lock by renewing it. Both stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from conveyor import App, Lock, LockNotAcquired

WAIT = 20.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_two_locks_of_one_name_exclude_each_other(any_app: App) -> None:
    first, second = any_app.lock("nightly-report"), any_app.lock("nightly-report")
    assert first.owner != second.owner
    assert first.acquire() is True
    assert first.acquire() is True  # its own: kept
    assert second.acquire() is False  # non-blocking by default: refused at once
    assert first.locked() and not second.locked()
    assert second.holder() == first.owner
    assert any_app.lock("another-name").acquire() is True  # names are independent
    assert second.release() is False  # not its to release
    assert first.locked()
    assert first.release() is True
    assert first.release() is False
    assert second.acquire() is True and second.locked() and not first.locked()
    second.release()


def test_with_raises_lock_not_acquired_and_releases_at_the_end(any_app: App) -> None:
    holder = any_app.lock("job")
    ran: list[str] = []
    with holder:
        assert holder.locked()
        with pytest.raises(LockNotAcquired, match=f"'job' is held by {holder.owner}") as caught, any_app.lock("job"):
            ran.append("second block")  # never runs
        assert caught.value.name == "job" and caught.value.holder == holder.owner
    assert ran == []
    assert not holder.locked() and holder.holder() is None
    with any_app.lock("job") as again:  # free again: released by the block's end
        assert again.locked()


def test_a_blocking_acquire_waits_for_the_holder_or_times_out(any_app: App) -> None:
    holder, waiter = any_app.lock("shared"), any_app.lock("shared")
    assert holder.acquire()
    assert waiter.acquire(blocking=True, timeout=0.3) is False
    releaser = threading.Timer(0.3, holder.release)
    releaser.start()
    assert waiter.acquire(blocking=True, timeout=WAIT) is True
    releaser.join()
    assert waiter.locked()
    waiter.release()


def test_an_expired_lock_can_be_taken_and_its_old_holder_knows_it_lost_it(any_url: str) -> None:
    clock = Clock()
    app = App(any_url, lease=1.0, clock=clock)
    old, new = app.lock("expiring", ttl=10), app.lock("expiring", ttl=10)
    assert old.acquire()
    clock.now += 9
    assert not new.acquire()
    assert old.extend() is True  # renewed: 10 s from now
    clock.now += 9.5
    assert not new.acquire()
    clock.now += 1  # past the ttl, not renewed: a dead holder's lock frees itself
    assert old.holder() is None
    assert new.acquire() is True
    assert old.extend() is False and not old.held  # lost: extending must not hide that
    assert not old.locked() and new.locked()
    app.close()


def test_a_with_block_longer_than_the_ttl_keeps_the_lock(any_app: App) -> None:
    contender = any_app.lock("long-job")
    with any_app.lock("long-job", ttl=0.6) as held:
        deadline = time.monotonic() + 2.0  # more than three ttls
        while time.monotonic() < deadline:
            assert contender.acquire() is False
            assert held.locked()
            time.sleep(0.1)
    assert contender.acquire() is True
    contender.release()


@pytest.mark.parametrize("ttl", [0, -1, True, "30"])
def test_lock_arguments_are_checked(app: App, ttl: Any) -> None:
    with pytest.raises(ValueError, match="lock ttl must be > 0"):
        app.lock("x", ttl=ttl)
    with pytest.raises(ValueError, match="lock name must be a non-empty string"):
        app.lock("")
    assert app.lock("x", owner="me").owner == "me"
    assert isinstance(app.lock("x"), Lock)


HOLDER = textwrap.dedent(
    """
    import sys, time
    from conveyor import App

    lock = App(sys.argv[1]).lock("contended", ttl=2.0)  # renewed every 2/3 s: room for a loaded machine
    assert lock.acquire()
    lock.keep()  # renewed while this process lives
    print("held", flush=True)
    time.sleep(600)
    """
)


def test_a_sigkilled_holder_process_loses_the_lock_after_its_ttl(any_url: str, tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    holder = subprocess.Popen([sys.executable, str(script), any_url], stdout=subprocess.PIPE, env=env)
    app = App(any_url)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"held"
        contender = app.lock("contended")
        time.sleep(2.5)  # longer than the ttl: the holder renews it
        assert contender.acquire() is False
        holder.send_signal(signal.SIGKILL)
        holder.wait(WAIT)
        assert contender.acquire(blocking=True, timeout=WAIT) is True
        contender.release()
    finally:
        holder.kill()
        holder.wait()
        app.close()
