"""A worker's settings as one typed value: what the CLI parses and a supervisor hands its children."""

from __future__ import annotations

import random

import msgspec

MAX_START_JITTER = 0.5  #: longest random delay before a worker's first claim and first heartbeat


def start_jitter(poll: float) -> float:
    """A random delay (0 to 0.5 s, never more than ``poll``) before a worker's first claim and
    first heartbeat: many workers started at once (a deploy, a supervisor's children) then do not
    all hit the store in the same instant."""
    return random.uniform(0.0, min(MAX_START_JITTER, poll))


def renew_interval(lease: float) -> float:
    """Seconds between lease renewals (heartbeats, the supervisor's, the leader lock's): a third of
    the lease, so two renewals can fail before it runs out, and at most 1 s."""
    return min(lease / 3, 1.0)


class WorkerOptions(msgspec.Struct, kw_only=True, frozen=True):
    """How one worker process runs. Validated by ``check``; every field has the CLI's default."""

    queues: tuple[str, ...] = ("default",)
    concurrency: int = 32  #: jobs run at once (32: claims and outcome writes carry batches; see benchmarks/README.md)
    grace: float = 5.0  #: seconds running jobs get to finish on a graceful stop before hand-back
    poll: float = 1.0  #: longest idle wait between claims when the store cannot push
    stuck_after: float = 5.0  #: supervised: exit to be replaced when an abandoned sync task holds its thread this long
    supervised: bool = False  #: run as a supervisor's child (signals and stuck handling differ)
    worker_id: str | None = None  #: given by a supervisor, which renews its live children's leases by it
    hand_back_wait: float = 5.0  #: on a stop: seconds to keep writing to an unavailable store, then leave it to rescue
    leader: bool = True  #: False (``--no-leader``): this process never takes the leader lock nor does leader duties
    scheduler: bool = True  #: False (``--no-scheduler``): this process neither syncs code schedules nor fires ticks
    services: bool = True  #: False (``--no-services``): this process runs no service replicas (local ones neither)

    def check(self) -> WorkerOptions:
        """Raise ValueError naming the first bad setting; return self."""
        if not self.queues or any(not isinstance(q, str) or not q.strip() for q in self.queues):
            raise ValueError(f"a worker needs one or more non-empty queue names, got {list(self.queues)!r}")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ValueError(f"concurrency must be an int >= 1, got {self.concurrency!r}")
        for name in ("grace", "poll", "stuck_after", "hand_back_wait"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not value >= 0:
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        for flag in ("leader", "scheduler", "services"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.poll <= 0:
            raise ValueError(f"poll must be > 0 seconds, got {self.poll!r}")
        return self
