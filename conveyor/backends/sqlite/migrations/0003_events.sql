-- Schema 3: the event log, the switches that stop claims, and the worker registry (issue 10,
-- docs/events.md). Never edit a migration that has shipped: add the next one.

-- Every state change appends its event here, in the same transaction as the change.
-- AUTOINCREMENT: a seq is never given out twice, even after the newest events are pruned, so a
-- subscriber's position (`seq > after`) stays meaningful. SQLite's writers are serial (one write
-- lock), so seq order is commit order: a reader never sees a lower seq commit after a higher one.
CREATE TABLE IF NOT EXISTS conveyor_events (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,
    job_id    TEXT,
    task      TEXT,
    queue     TEXT,
    attempt   INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    data      TEXT NOT NULL DEFAULT '{}',
    job_seq   INTEGER  -- the job's conveyor_jobs.seq (NULL for no job): what its history is indexed by
);

-- A job's history, and the deletion of a pruned job's events. By the job's seq, not its id: job ids
-- are random, so an index of them takes every event's entry on a page of its own, and each commit
-- wrote as many index pages as it wrote events (measured: it doubled the cost of a claim and of
-- writing outcomes). Job seqs follow the queue, so a claim's events land on one or two pages. A
-- seq can be given again after the newest job is deleted, so readers also check job_id.
CREATE INDEX IF NOT EXISTS conveyor_events_job ON conveyor_events (job_seq) WHERE job_seq IS NOT NULL;
-- No index on `at`: events are appended in time order, so pruning by age (App(event_ttl=)) deletes
-- a prefix of the log in seq order (queries.sql prune_events). An index would be written by every
-- commit that writes events, which measured a fifth of their cost in pages written (WAL frames).

-- A row means "off": ('queue', name) paused, ('task', name) disabled, ('all', '') everything.
-- Read by every claim inside its write transaction, so a switch holds from its commit on.
CREATE TABLE IF NOT EXISTS conveyor_switches (
    scope TEXT NOT NULL,
    name  TEXT NOT NULL,
    since REAL NOT NULL,
    PRIMARY KEY (scope, name)
);

-- One row per worker process, refreshed by its heartbeat; `stop_requested` is how stop_workers
-- reaches it (read back by that heartbeat). queues is a JSON array.
CREATE TABLE IF NOT EXISTS conveyor_workers (
    id             TEXT PRIMARY KEY,
    host           TEXT NOT NULL,
    pid            INTEGER NOT NULL,
    queues         TEXT NOT NULL,
    concurrency    INTEGER NOT NULL,
    version        TEXT NOT NULL,
    started_at     REAL NOT NULL,
    last_seen      REAL NOT NULL,
    in_flight      INTEGER NOT NULL DEFAULT 0,
    state          TEXT NOT NULL,
    stop_requested INTEGER NOT NULL DEFAULT 0,
    leader         INTEGER NOT NULL DEFAULT 0
);
