"""Test bodies run at once, each on a thread of its own, as workers or processes racing on one store
would: started together behind a barrier, joined, and what any of them raised handed back for the
test to assert on (an exception on a thread would otherwise be lost)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence


def at_once(bodies: Sequence[Callable[[], object]], timeout: float = 60.0) -> list[BaseException]:
    """Run every body on its own thread, all released together; wait up to ``timeout`` seconds for
    each; return what they raised (an empty list when none did)."""
    barrier = threading.Barrier(len(bodies))
    errors: list[BaseException] = []

    def run(body: Callable[[], object]) -> None:
        try:
            barrier.wait()
            body()
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return errors
