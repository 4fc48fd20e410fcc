-- Schema 10: the event log without AUTOINCREMENT (issue 10's cost bound; docs/events.md "How SQLite
-- stores events"). AUTOINCREMENT kept its counter in sqlite_sequence, a page of its own that every commit
-- writing an event wrote again: a tenth of a small commit's pages (measured on the store alone, 2.64 s
-- with it against 2.52 s without, no log 2.37 s; benchmarks/README.md). Now a new row's number is the
-- table's largest plus one, and a number is still never given out twice: whatever deletes the newest
-- events (prune by age, a pruned job's events, destroy_all) leaves a head row in their place, a batch
-- row of no events (n = 0) that holds the highest number given (event_writes.keeping_head).
-- Never edit a migration that has shipped: add the next one.
CREATE TABLE conveyor_events_v10 (
    seq       INTEGER PRIMARY KEY,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,
    job_id    TEXT,
    task      TEXT,
    queue     TEXT,
    attempt   INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    data      TEXT NOT NULL DEFAULT '{}',
    job_seq   INTEGER,  -- the job's conveyor_jobs.seq (NULL for no job): what its history is indexed by
    n         INTEGER   -- a batch row's number of events (migrations/0009); NULL for a row of one event
);

INSERT INTO conveyor_events_v10 (seq, at, kind, job_id, task, queue, attempt, worker_id, data, job_seq, n)
SELECT seq, at, kind, job_id, task, queue, attempt, worker_id, data, job_seq, n FROM conveyor_events;

-- The counter's high mark, if the newest events were pruned: the head row takes it over. Its time is the
-- newest remaining event's (or the migration's), so the log stays in time order for prune_events.
INSERT INTO conveyor_events_v10 (seq, at, kind, data, n)
SELECT s.seq,
       coalesce((SELECT max(at) FROM conveyor_events), (julianday('now') - 2440587.5) * 86400.0),
       'head', '{"t":[],"a":0,"e":[]}', 0
FROM sqlite_sequence AS s
WHERE s.name = 'conveyor_events' AND s.seq > (SELECT coalesce(max(seq), 0) FROM conveyor_events);

DROP TABLE conveyor_events;
ALTER TABLE conveyor_events_v10 RENAME TO conveyor_events;
CREATE INDEX conveyor_events_job ON conveyor_events (job_seq) WHERE job_seq IS NOT NULL;
