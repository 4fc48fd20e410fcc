"""The PostgreSQL store's event log: reading it, following it, numbering it, pruning it.

Job steps write their events inside their own statements (queries.sql), with ``seq`` NULL. A
row gets its public number from the sequencer, which numbers committed rows only, in one
transaction under an advisory lock, each after every number given out before: so a transaction
that wrote early and commits late is numbered after the rows a reader has already seen, never
behind them (docs/postgres.md, "The event log"). Readers read numbered rows only, and run the
sequencer first; ``wait_for_events`` listens on channel ``conveyor_events``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple

from ...errors import StoreError, StoreUnavailable
from ...events import Event, EventQuery
from .. import event_batches, sql_files
from ..event_batches import Jobs, LogRow
from ..rows import event_params
from .connections import Connection, Listener

log = logging.getLogger("conveyor.postgres")

#: Rows one sequencer round numbers at most (a prefix of the order: the rest follow next round).
NUMBER_BATCH = 10_000
#: A process's worker-pool writes (claims, outcomes, progress) notify readers at most once per this
#: many seconds (Waker).
NOTIFY_EVERY = 0.05
#: For this long after it hears a notification (or begins to listen), a waiting reader looks again
#: every NOTIFY_EVERY seconds: a write that did not notify began less than NOTIFY_EVERY after one
#: that did, and commits at once (a worker's statement is its own transaction).
ACTIVE = 3 * NOTIFY_EVERY
#: Seconds a reader waits before looking again when another sequencer held the lock: that one
#: may have taken its snapshot before the commit that woke the reader, and not number its rows.
RECHECK = NOTIFY_EVERY


class Head(NamedTuple):
    """Where the log stands after a sequencer round."""

    last: int  #: the last seq given out
    more: bool  #: rows were left for another round (numbered a full batch)
    busy: bool  #: another sequencer held the lock: nothing was numbered by this round


class Waker:
    """Whether a write of events wakes readers: the ``notify`` parameter of the statements that
    write events (queries.sql, ``woken``). A main-pool write (an enqueue, a control call, a
    caller's transaction) always does. A worker-pool write does only if no worker-pool write of
    this process that did notify began in the last NOTIFY_EVERY seconds: a NOTIFY queues every
    committing transaction that sent one on a server-wide lock, held through the WAL flush of a
    durable one, and the workers' commits would queue behind every enqueue's (docs/postgres.md)."""

    def __init__(self) -> None:
        self._last = -math.inf  #: time.monotonic() at which the last worker-pool write that notified began

    def ask(self, worker: bool) -> float | None:
        """If a write beginning now is to notify, the time it begins (for ``sent``); else None."""
        now = time.monotonic()
        return now if not worker or now - self._last >= NOTIFY_EVERY else None

    def sent(self, began: float | None, wrote: bool) -> None:
        """A worker-pool write that was to notify returned: if it wrote events, it did."""
        if began is not None and wrote and began > self._last:
            self._last = began


class EventLogMixin:
    """The EventLog concern of PostgresBackend (base.EventLog). Uses the store's pooled
    connections (``_conn``) and a LISTEN session of its own, opened on the first wait."""

    _event_listener: Listener
    _waker: Waker

    def _conn(self, what: str, *, worker: bool = False) -> AbstractContextManager[Connection]:
        raise NotImplementedError  # PostgresBackend's

    # the sequencer -------------------------------------------------------------------------
    def _sequence(self, wait: bool = False) -> Head:
        """One sequencer round: number the committed rows not numbered yet (at most NUMBER_BATCH),
        in a transaction of its own that first takes the sequencer's advisory lock; if another
        sequencer holds it, only read the head (``wait``: wait for the lock instead)."""
        q = sql_files.queries("postgres")
        with self._conn("numbering events") as conn:
            with conn.transaction():
                if wait:
                    conn.execute(q["sequencer_lock_wait"])
                    locked = True
                else:
                    got = conn.execute(q["sequencer_lock"]).fetchone()
                    locked = got is not None and bool(got[0])
                if locked:
                    # a second statement: its snapshot is taken after the lock was granted, so it
                    # sees the commit of the sequencer that held it before
                    row = conn.execute(q["number_events"], {"batch": NUMBER_BATCH}).fetchone()
                    assert row is not None
                    last, numbered, _ = row
                    return Head(int(last), int(numbered) >= NUMBER_BATCH, False)
            row = conn.execute(q["event_head"]).fetchone()
            assert row is not None
            return Head(int(row[0]), False, True)

    def _sequence_all(self) -> Head:
        """Sequencer rounds, waiting for the lock, until every row committed before the call is
        numbered."""
        head = self._sequence(wait=True)
        while head.more:
            head = self._sequence(wait=True)
        return head

    # base.EventLog -----------------------------------------------------------------------------
    def events(self, query: EventQuery) -> list[Event]:
        """Numbered events after ``query.after``, in seq order, once everything committed before the
        call is numbered (so a caller reads its own writes). Batch rows are read out and filtered
        by event_batches; a job's history comes from its own rows (``_job_events``)."""
        self._sequence_all()  # waits for a round in progress: a caller reads its own committed writes
        q = sql_files.queries("postgres")
        params = event_params(query)
        with self._conn("reading events") as conn:
            if query.job_id is not None:
                return _job_events(conn, q, params, query)

            def fetch(after: int, limit: int) -> Sequence[LogRow]:
                return conn.execute(q["events"], {**params, "after": after, "limit": limit}).fetchall()

            def resolve(seqs: Collection[int]) -> Jobs:
                return {row[0]: (row[1], 0) for row in conn.execute(q["event_jobs"], {"seqs": list(seqs)})}

            return event_batches.read(fetch, resolve, query)

    def last_event_seq(self) -> int:
        """The last seq given out, once every event committed before the call is numbered."""
        return self._sequence_all().last

    def wait_for_events(self, after: int, timeout: float) -> None:
        """Until an event past ``after`` is numbered, or ``timeout``: subscribe first, then run the
        sequencer; wait for a notification (a commit that wrote events, or another reader's
        numbering), or only RECHECK seconds if another sequencer was busy or a notification was
        heard lately (ACTIVE: workers' sessions skip some). Never raises: with the database away
        it sleeps the timeout out."""
        deadline = time.monotonic() + max(0.0, timeout)
        self._event_listener.subscribe()  # a commit after the check below still wakes us
        while True:
            try:
                head = self._sequence()
            except StoreError as exc:
                log.debug("wait_for_events: %s", exc)
                time.sleep(max(0.0, deadline - time.monotonic()))
                return
            now = time.monotonic()
            if head.last > after or now >= deadline:
                return
            if head.more:
                continue
            soon = head.busy or now < self._event_listener.heard_at + ACTIVE
            self._event_listener.wait(None, min(deadline, now + RECHECK) if soon else deadline)

    def prune_events(self, before: float) -> int:
        """Number what can be numbered (so a log nobody reads does not keep an ever longer list of
        unnumbered rows), then delete the events written before ``before``; how many events went."""
        self._sequence_all()
        with self._conn("pruning events") as conn:
            row = conn.execute(sql_files.queries("postgres")["prune_events"], {"before": before}).fetchone()
        return 0 if row is None else int(row[0])

    def emit(self, job_id: str, token: str, kind: str, data: str, now: float) -> bool:
        """A running task's own event, fenced by its run's token; False if the run is stale. Like
        progress, a hint to the run: while the database is away it is dropped (logged) and the
        run goes on, reported as current."""
        began = self._waker.ask(worker=True)
        params = {"id": job_id, "token": token, "event_kind": kind, "event_data": data, "now": now,
                  "wake": began is not None}  # fmt: skip
        try:
            with self._conn("emit", worker=True) as conn:
                row = conn.execute(sql_files.queries("postgres")["emit"], params).fetchone()
            written = row is not None and row[0] == 1
            self._waker.sent(began, written)
            return written
        except StoreUnavailable as exc:
            log.warning("job %s: event %r not recorded: %s", job_id, kind, exc)
            return True


def _job_events(conn: Connection, q: dict[str, str], params: dict[str, Any], query: EventQuery) -> list[Event]:
    """A job's events: its rows of one event (by job id) and the batch rows its steps noted (by id),
    read out in seq order; a job gone with its events has none."""
    found = conn.execute(q["job_event_rows"], params).fetchone()
    job_seq, rows = (found[0], found[1]) if found is not None else (None, [])
    log_rows = conn.execute(q["job_events"], {**params, "rows": rows}).fetchall()
    jobs = {} if job_seq is None else {job_seq: (query.job_id or "", 0)}
    return event_batches.history(log_rows, jobs, query)
