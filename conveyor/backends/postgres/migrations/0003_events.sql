-- conveyor on PostgreSQL, schema version 3: the event log, the switches and the worker registry.

-- The event log. A row is written by the statement (or transaction) that makes the change it
-- describes, so the log and the jobs never disagree; it gets its public number, seq, later, from
-- the sequencer (queries.sql: number_events), which numbers committed rows only, each after every
-- number given out before: a transaction that took an id early but commits late is numbered when
-- it commits, after what readers may already have read, never behind it. docs/postgres.md ("The
-- event log") says why no reader skips an event.
CREATE TABLE conveyor_events (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order, internal
    seq       bigint,                                           -- NULL until the sequencer numbers it
    at        double precision NOT NULL,
    kind      text NOT NULL,
    job_id    text,
    task      text,
    queue     text,
    attempt   integer NOT NULL DEFAULT 0,
    worker_id text,
    data      json NOT NULL DEFAULT '{}'
) WITH (
    -- Every row is updated once (numbered) and deleted after event_ttl: vacuum it early, as the jobs.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);

-- Readers read numbered rows by seq. Partial: a row written (seq NULL) costs this index nothing,
-- it enters it once numbered; unique as a column constraint would be, for numbers given out.
CREATE UNIQUE INDEX conveyor_events_seq ON conveyor_events (seq) WHERE seq IS NOT NULL;
-- The sequencer's work list: the rows not numbered yet, in the order they are numbered. It holds
-- only the rows written since the last numbering.
CREATE INDEX conveyor_events_unnumbered ON conveyor_events (id) WHERE seq IS NULL;
-- A job's history, and the deletion of a pruned job's events. Numbered rows only: readers read
-- nothing else, and an event written by a worker's claim or outcome then costs no insertion into
-- a large index keyed at random (job ids) at its write; the row enters it when numbered, which
-- writes a new version of the row anyway. (Measured: a third of the drain's cost of events.)
CREATE INDEX conveyor_events_job ON conveyor_events (job_id) WHERE seq IS NOT NULL;
-- prune_events (event_ttl): rows are appended in time order, so a BRIN index (a few pages, next
-- to free to maintain per insert) finds the old ones.
CREATE INDEX conveyor_events_at ON conveyor_events USING brin (at);

-- The last seq given out: one row, advanced by the sequencer under its advisory lock. It never
-- goes back (destroy_all keeps it), so a number is never reused.
CREATE TABLE conveyor_event_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    last bigint NOT NULL
);
INSERT INTO conveyor_event_head (last) VALUES (0);

-- No trigger wakes readers: each statement that writes events notifies 'conveyor_events' itself
-- when its caller asks (queries.sql, `woken`), so that a worker's claims and outcomes notify at
-- most every 0.05 s per process (a NOTIFY queues every committing transaction that sent one on a
-- server-wide lock) and pay nothing per statement for it (a trigger with a transition table cost
-- about 20 us per statement, measured; docs/postgres.md).

-- What is turned off: a row means off. ('queue', 'emails'): paused; ('task', 'app.send'):
-- disabled; ('all', ''): nothing is claimed. Claims read it (a few rows at most).
CREATE TABLE conveyor_switches (
    scope text NOT NULL CHECK (scope IN ('queue', 'task', 'all')),
    name  text NOT NULL,
    since double precision NOT NULL,
    PRIMARY KEY (scope, name)
);

-- The worker registry: each worker process registers itself and refreshes its row with its
-- heartbeat; stop_workers sets stop_requested, which the worker reads at its next beat.
CREATE TABLE conveyor_workers (
    id             text PRIMARY KEY,
    host           text NOT NULL,
    pid            integer NOT NULL,
    queues         json NOT NULL,
    concurrency    integer NOT NULL,
    version        text NOT NULL,
    started_at     double precision NOT NULL,
    last_seen      double precision NOT NULL,
    in_flight      integer NOT NULL DEFAULT 0,
    state          text NOT NULL CHECK (state IN ('running', 'stopping', 'stopped', 'dead')),
    stop_requested boolean NOT NULL DEFAULT false,
    leader         boolean NOT NULL DEFAULT false
);
