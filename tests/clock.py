"""A settable clock for ``App(clock=...)``: every store step of the app reads it, and the test moves
``now`` by hand (no sleeping, no fake time module: the app asks its clock, the test answers)."""

from __future__ import annotations


class Clock:
    """The time the test says it is, in Unix seconds."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
