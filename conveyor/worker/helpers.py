"""Helper threads that never die silently (DESIGN.md, principle 9).

Each helper loop (reporter, monitor, leader, the asyncio loop) handles the errors it expects
itself. Anything else that escapes it, or the loop simply ending while the worker still needs
it, is logged at CRITICAL and reported to the worker, which then stops and exits non-zero so
that its supervisor replaces it, rather than keep leases on work nobody will finish.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("conveyor.worker")


class Helper:
    """One supervised helper thread running ``target`` until the worker ends it."""

    def __init__(self, name: str, target: Callable[[], None], on_failure: Callable[[str, str], None]) -> None:
        self.name = name
        self._target = target
        self._on_failure = on_failure
        self.ending = False  #: set by the worker before it ends this helper on purpose
        self.failed = False
        self.thread = threading.Thread(target=self._main, name=f"conveyor-{name}", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self.thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the thread to end; True if it did."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _main(self) -> None:
        try:
            self._target()
        except BaseException as exc:
            self.failed = True
            log.critical("worker helper %r failed: %s: %s; stopping the worker", self.name,
                         type(exc).__name__, exc, exc_info=exc)  # fmt: skip
            self._on_failure(self.name, f"{type(exc).__name__}: {exc}")
            return
        if not self.ending:
            self.failed = True
            log.critical("worker helper %r ended while the worker still needed it; stopping the worker", self.name)
            self._on_failure(self.name, "ended unexpectedly")
