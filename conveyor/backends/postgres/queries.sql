-- Every statement the PostgreSQL store runs, by name (`-- name: NAME` starts a block).
-- Parameters are psycopg's %(name)s. Times are Unix seconds from the caller.
-- JSON columns are read back as text (`{job_columns}` expands to `args::text, ...`) and decoded
-- by conveyor.codec, as SQLite does. Column lists are placeholders expanded from
-- conveyor.backends.columns when the file is loaded, so a new column is one edit there.
-- The statement names are shared with sqlite/queries.sql; a statement only this dialect has
-- says why in a line `-- only in this dialect: ...`.
-- Events: a statement that changes a job (or a switch, or the worker registry) writes the event
-- rows of what it changed itself, `logged AS (INSERT INTO conveyor_events ... RETURNING 1)`, so
-- the event exists exactly when the change does. Its `woken` column wakes readers waiting on
-- channel 'conveyor_events' (delivered at commit) if it wrote an event and %(wake)s is true:
-- the caller decides (postgres/events.py: always from the main pool; from the worker pool at most
-- every 0.05 s per process, as a NOTIFY queues every committing transaction that sent one).

-- name: migrate_lock
-- only in this dialect: concurrent servers' set-ups race; SQLite's file lock already serialises them.
-- Serialises concurrent `conveyor migrate` runs (and App set-ups) on this schema until commit.
SELECT pg_advisory_xact_lock(1129270853, hashtext(current_schema()));

-- name: create_migrations_table
-- only in this dialect: the bookkeeping table of applied migrations (SQLite's is created by its
-- migration 0001, conveyor_meta).
CREATE TABLE IF NOT EXISTS conveyor_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied
-- only in this dialect: the migration bookkeeping is a table here.
SELECT version FROM conveyor_migrations ORDER BY version;

-- name: migrations_table_exists
-- only in this dialect: the migration bookkeeping is a table here.
SELECT to_regclass('conveyor_migrations') IS NOT NULL;

-- name: schema_version
-- The latest applied migration, or NULL; an error if the table is missing (caught by the caller).
SELECT max(version) FROM conveyor_migrations;

-- name: record_migration
-- In the migration's own transaction, so a schema is never left between two versions.
INSERT INTO conveyor_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: worker_session
-- only in this dialect: session settings of the worker pool (SQLite has no server session).
-- Set on the sessions of the worker pool, which only claims, writes outcomes and renews leases.
-- synchronous_commit: commit without waiting for the WAL flush. A server crash can lose the last
-- such commits: a claim or an outcome lost that way makes the job run again once its lease runs
-- out, which at-least-once allows. Enqueues, locks and control calls use the other pool and the
-- server's setting.
-- plan_cache_mode: these few statements run thousands of times a second with plans that do not
-- depend on their parameters (the claim is an index scan whatever the queue); planning the claim
-- afresh each time (PostgreSQL's default for it here) cost 0.2 ms of a 0.3 ms claim.
-- jit: off, as for any short statement; a generic plan's cost estimates could otherwise switch
-- it on for a claim and spend milliseconds compiling.
SET synchronous_commit = off;
SET plan_cache_mode = force_generic_plan;
SET jit = off;

-- name: listen
-- only in this dialect: idle workers wait on a notification channel; SQLite polls its file.
LISTEN conveyor_jobs;

-- name: savepoint
-- Inside a caller's transaction (transactional enqueue): undo our rows only.
SAVEPOINT conveyor_enqueue;

-- name: release_savepoint
RELEASE SAVEPOINT conveyor_enqueue;

-- name: rollback_to_savepoint
ROLLBACK TO SAVEPOINT conveyor_enqueue;

-- name: wake_readers
-- a fragment: a column `woken` for a statement whose CTE `logged` (its INSERT INTO conveyor_events
-- ... RETURNING 1) wrote events: one pg_notify on channel 'conveyor_events', delivered at commit, if
-- it wrote any and the caller asked (%(wake)s: postgres/events.py's Waker decides, in Python).
-- Written {wake_readers}.
-- only in this dialect: SQLite's readers watch PRAGMA data_version instead.
(SELECT count(pg_notify('conveyor_events', '')) FROM (SELECT FROM logged LIMIT 1) AS one WHERE %(wake)s) AS woken

-- name: batch_mark
-- a fragment: the CTE `mark`, the id of the batch row a statement writes (log_batch), taken from the
-- events' identity before the statement changes its jobs, so that each can note it (event_row). Not
-- taken if the statement changes no job (a CTE runs when first read). `WITH {batch_mark}, ...`.
-- only in this dialect: SQLite numbers its batch rows as it writes them (event_mark).
mark AS MATERIALIZED (SELECT nextval('conveyor_events_id_seq') AS id)

-- name: event_row
-- a fragment: a job's row notes the batch row its step writes (batch_mark). `SET ..., {event_row}`.
event_rows = event_rows || (SELECT id FROM mark)

-- name: log_batch
-- a fragment: the end of a statement whose CTE `batch` (seq, task, queue, attempts, worker_id, kind,
-- data: one row per event, data as JSON text) holds the events of jobs it changed: one batch row of
-- them all (conveyor/backends/event_batches.py has the format), with id `mark`, numbered later by
-- the sequencer as n events. The row's task, queue, attempt, kind and worker are the least of its
-- events' (`shape`, one pass); an event that matches them all is its job's seq alone, any other
-- spells out its own. One pass and a join to one row: the form with task/queue pairs listed once
-- and indexed (as Python writes it) cost the claim a tenth more than this (bench_event_cost.py).
-- No row when the batch is empty. A statement ends `), {log_batch}` and then reads `logged` (woken)
-- as log_done's do.
-- only in this dialect: SQLite encodes its batch rows in Python (event_batches.encode).
shape AS MATERIALIZED (
    SELECT min(task) AS task, min(queue) AS queue, min(attempts) AS attempts, min(kind) AS kind,
           min(worker_id) AS worker_id, count(*) AS n
    FROM batch
), logged AS (
    INSERT INTO conveyor_events (id, at, kind, worker_id, data, n) OVERRIDING SYSTEM VALUE
    SELECT (SELECT id FROM mark), %(now)s, s.kind, s.worker_id,
           json_build_object(
               't', json_build_array(json_build_array(s.task, s.queue)),
               'a', s.attempts,
               'e', (SELECT json_agg(
                         CASE WHEN b.task = s.task AND b.queue = s.queue AND b.attempts = s.attempts
                                   AND b.kind = s.kind AND b.worker_id IS NOT DISTINCT FROM s.worker_id
                                   AND b.data = '{}'
                              THEN to_json(b.seq)
                              ELSE json_build_array(b.seq, b.attempts, json_build_array(b.task, b.queue), b.kind,
                                                    b.worker_id, CASE WHEN b.data <> '{}' THEN b.data::json END) END
                         ORDER BY b.seq)
                     FROM batch AS b)),
           s.n
    FROM shape AS s
    WHERE s.n > 0
    RETURNING 1
)

-- name: insert
-- One job (the parameters are columns.insert_params, one per insert column, plus its event's kind
-- and data) and its `enqueued` event, in one statement: one round trip, and the event exists
-- exactly when the job was inserted. A key held by an unfinished job makes it a no-op (no row
-- returned, no event), a taken id raises. The status is the row's: queued, or waiting for a
-- pipeline whose first stage waits (the insert trigger wakes workers for queued ones only).
WITH inserted AS (
    INSERT INTO conveyor_jobs ({insert_columns})
    VALUES ({insert_params})
    ON CONFLICT (key) WHERE key IS NOT NULL AND status IN ('queued', 'running', 'waiting') DO NOTHING
    RETURNING seq, id, task, queue, created_at
), logged AS (
    INSERT INTO conveyor_events (at, kind, job_id, task, queue, data)
    SELECT created_at, %(event_kind)s, id, task, queue, %(event_data)s::json FROM inserted
    RETURNING 1
)
SELECT seq,
       {wake_readers}
FROM inserted;

-- name: insert_copy
-- only in this dialect: a batch streamed by COPY (SQLite's executemany of insert costs no round trips).
-- Jobs without a key, one row each (insert_row's values, the status among them), in the batch's
-- order, so seq, the FIFO tie-break, follows the batch. COPY skips the parsing and planning a
-- multi-row INSERT pays per value, and fires the statement trigger once: one notification per queue
-- with queued jobs. A taken id aborts the whole COPY (nothing of the batch is written) with insert's
-- UniqueViolation. Each row's seq and event_rows are the ones reserve_ids gave (COPY writes an
-- identity column's value as given).
COPY conveyor_jobs (seq, event_rows, {insert_columns}) FROM STDIN;

-- name: reserve_ids
-- only in this dialect: SQLite's writer reads the seqs its executemany gave (last_insert_rowid).
-- Before a COPY'd batch (insert_copy): the seqs of its %(jobs)s jobs and the ids of its %(rows)s
-- batch rows of events, in order, taken from the tables' identities so that the events can name the
-- jobs by seq and each job its batch row, all in one COPY each.
-- The identities' sequences by name (as batch_mark): a lookup per value (pg_get_serial_sequence) cost
-- more than the values.
SELECT ARRAY(SELECT nextval('conveyor_jobs_seq_seq') FROM generate_series(1, %(jobs)s)),
       ARRAY(SELECT nextval('conveyor_events_id_seq') FROM generate_series(1, %(rows)s));

-- name: insert_copy_events
-- only in this dialect: the events of a COPY'd batch (insert_copy), streamed after it in the same
-- transaction: its `enqueued` events as batch rows of up to 100 (event_batches.encode), with the ids
-- reserve_ids gave, in the batch's order.
COPY conveyor_events (id, at, kind, worker_id, data, n) FROM STDIN;

-- name: wake_event_readers
-- only in this dialect: SQLite's readers poll. After insert_copy_events, in its transaction:
-- COPY cannot say `woken`.
SELECT pg_notify('conveyor_events', '');

-- name: find_unfinished_by_key
-- The job that holds a key, when an insert of that key was a no-op.
SELECT {job_columns} FROM conveyor_jobs WHERE key = %(key)s AND status IN ('queued', 'running', 'waiting');

-- name: claim
-- Per queue, the first `limit` due jobs in claim order straight off conveyor_jobs_claim, skipping
-- rows another claim has locked; then the best `limit` of those across queues become RUNNING, each
-- with a fresh fencing token, and each gets its `started` event. Rows locked but not kept stay
-- queued (their locks end with the statement). One statement, so one round trip and no window
-- between choosing and taking.
-- Switches (conveyor_switches, a few rows at most): a paused queue is not read at all, a disabled
-- task's jobs are passed over in the index, and nothing is taken while ('all', '') exists; read in
-- the statement's snapshot, so a switch is in force for every claim that starts after its commit.
-- The paused queues are read once per statement (an InitPlan); a disabled task is an anti-join
-- probe per row read (`task <> ALL(ARRAY(...))` would be cheaper, but the planner, blind to the
-- array, expects it to reject most rows and sorts the whole backlog: 400 ms at 1M queued).
-- The chosen rows are matched by `seq = ANY(ARRAY(...))`, an index probe per row whatever the
-- planner guesses of the LIMIT: the worker pool runs this as a generic plan (see worker_session),
-- and a join there was planned as a hash join over the whole table (260x slower at 1M queued).
-- RETURNING has no order: seq comes first so the caller can sort by claim order.
-- The `started` events are one batch row (log_batch), whose id each job notes in event_rows.
WITH {batch_mark}, claimed AS (
    UPDATE conveyor_jobs AS j
    SET status = 'running', token = replace(gen_random_uuid()::text, '-', ''), worker_id = %(worker_id)s,
        attempts = j.attempts + 1, started_at = %(now)s, finished_at = NULL, lease_expires_at = %(until)s,
        progress = 0, progress_message = '', {event_row}
    WHERE j.status = 'queued' AND j.seq = ANY(ARRAY(
        SELECT c.seq
        FROM unnest(%(queues)s::text[]) AS q(name)
        CROSS JOIN LATERAL (
            SELECT seq, priority, scheduled_at FROM conveyor_jobs AS w
            WHERE status = 'queued' AND queue = q.name AND scheduled_at <= %(now)s
              AND NOT EXISTS (SELECT FROM conveyor_switches AS s WHERE s.scope = 'task' AND s.name = w.task)
            ORDER BY priority DESC, scheduled_at, seq
            LIMIT %(limit)s
            FOR UPDATE SKIP LOCKED
        ) AS c
        WHERE q.name <> ALL(ARRAY(SELECT name FROM conveyor_switches WHERE scope = 'queue'))
          AND NOT EXISTS (SELECT FROM conveyor_switches WHERE scope = 'all')
        ORDER BY c.priority DESC, c.scheduled_at, c.seq
        LIMIT %(limit)s
    ))
    RETURNING j.seq, {job_columns:j}
), batch AS (
    SELECT seq, task, queue, attempts, worker_id, %(event_kind)s AS kind, %(event_data)s AS data FROM claimed
), {log_batch}
SELECT claimed.*,
       {wake_readers}
FROM claimed;

-- name: start
-- Eager mode: claim this one queued job, due or not, as `claim` would (with its `started` event).
-- Switches do not apply: eager mode runs what it has just enqueued.
WITH started AS (
    UPDATE conveyor_jobs
    SET status = 'running', token = replace(gen_random_uuid()::text, '-', ''), worker_id = %(worker_id)s,
        attempts = attempts + 1, started_at = %(now)s, finished_at = NULL, lease_expires_at = %(until)s,
        progress = 0, progress_message = ''
    WHERE id = %(id)s AND status = 'queued'
    RETURNING {job_columns}
), logged AS (
    INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, task, queue, attempts, worker_id, %(event_data)s::json FROM started
    RETURNING 1
)
SELECT started.*,
       {wake_readers}
FROM started;

-- name: next_due
-- When the next queued job of these queues falls due: per queue and priority, one probe of
-- conveyor_jobs_claim (no scan of a long backlog of scheduled jobs). The claim's switches apply
-- (paused queues, disabled tasks, all), or an idle worker whose only due jobs are switched off
-- would be told to claim at once, again and again.
SELECT min(t.scheduled_at)
FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN unnest(%(priorities)s::int[]) AS p(value)
CROSS JOIN LATERAL (
    SELECT scheduled_at FROM conveyor_jobs AS w
    WHERE status = 'queued' AND queue = q.name AND priority = p.value
      AND NOT EXISTS (SELECT FROM conveyor_switches AS s WHERE s.scope = 'task' AND s.name = w.task)
    ORDER BY scheduled_at
    LIMIT 1
) AS t
WHERE q.name <> ALL(ARRAY(SELECT name FROM conveyor_switches WHERE scope = 'queue'))
  AND NOT EXISTS (SELECT FROM conveyor_switches WHERE scope = 'all');

-- name: extend_leases
-- A worker's heartbeat: the tokens returned are the runs it still holds.
UPDATE conveyor_jobs SET lease_expires_at = %(until)s
WHERE status = 'running' AND worker_id = %(worker_id)s AND token = ANY(%(tokens)s)
RETURNING token;

-- name: extend_worker_leases
-- A supervisor renews its live children's runs from outside (conveyor_jobs_running is keyed by worker).
UPDATE conveyor_jobs SET lease_expires_at = %(until)s
WHERE status = 'running' AND worker_id = ANY(%(worker_ids)s);

-- name: log_done
-- a fragment: the end of a statement whose CTE `done` (an UPDATE ... RETURNING id, task, queue,
-- attempts, worker_id) changed jobs: it appends one event per row changed, of %(event_kind)s with
-- %(event_data)s, in the same statement, and returns how many (`written`) and whether it woke
-- readers (`woken`: once, if it wrote any and %(wake)s). A statement ends `), {log_done}`.
-- only in this dialect: SQLite appends events with its own statements in the same transaction.
logged AS (
    INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, task, queue, attempts, worker_id, %(event_data)s::json FROM done
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: progress
-- The progress and its `progress` event, fenced by the run's token (a stale run writes neither).
WITH done AS (
    UPDATE conveyor_jobs SET progress = %(percent)s, progress_message = %(message)s
    WHERE id = %(id)s AND token = %(token)s AND status = 'running'
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: emit
-- A running task's own event, fenced by its run's token. FOR SHARE: a finish of the run being
-- written at the same moment is waited for, then the row re-checked, so no task event is logged
-- after its run's end.
WITH logged AS (
    INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, task, queue, attempts, worker_id, %(event_data)s::json
    FROM conveyor_jobs
    WHERE id = %(id)s AND token = %(token)s AND status = 'running'
    FOR SHARE
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- The finish_* statements write one run's outcome, fenced by its token; with `lease_before` (the
-- leader's rescue) only if the lease ran out before that time, so a worker that renewed keeps its job.
-- Each writes its event (kind and data from events.outcome_event, as parameters) from the row it
-- changed, in the same statement: a report that is refused (stale token) writes no event. The
-- statement returns `written`, the number of events written: 1 if the outcome was written.

-- name: current_run
-- a fragment: the fence of every finish_* statement, written {current_run}: the run's job, by its id
-- and token, still running; with lease_before (the leader's rescue) only if its lease ran out before
-- that time, so a worker that renewed it keeps its job.
id = %(id)s AND token = %(token)s AND status = 'running'
  AND (%(lease_before)s::float8 IS NULL OR lease_expires_at < %(lease_before)s)

-- name: finish_succeeded
-- `results` gains this stage's result: the JSON text is spliced, so it stays verbatim.
WITH done AS (
    UPDATE conveyor_jobs
    SET status = 'succeeded', result = %(result)s::json,
        results = (CASE WHEN results::text = '[]' THEN '[' || %(result)s || ']'
                        ELSE left(results::text, -1) || ',' || %(result)s || ']' END)::json,
        error = NULL, exit_code = 0, progress = 100, finished_at = %(now)s, expires_at = %(now)s + result_ttl,
        token = NULL, lease_expires_at = NULL
    WHERE {current_run}
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: finish_succeeded_many
-- only in this dialect: a batch of successes in one statement over arrays (one round trip);
-- SQLite runs finish_succeeded per report in one local transaction.
-- Returns the tokens it wrote (a stale token, of a run cancelled or rescued meanwhile, matches no
-- row and is not returned), and writes their events. Reports with lease_before go through finish_succeeded.
-- The arrays are sent in binary (%(x)b): psycopg quotes each element of a text array in Python
-- (a regex per element), five times the cost of the binary form, paid per finished job.
-- Events: a kind and data per report, or (the usual case: every one `succeeded`, '{}') empty
-- arrays, which unnest pads with NULL, and the one kind and data as %(event_kind)s, %(event_data_one)s;
-- one batch row (log_batch), whose id each job notes in event_rows.
WITH {batch_mark}, done AS (
    UPDATE conveyor_jobs AS j
    SET status = 'succeeded', result = r.result::json,
        results = (CASE WHEN j.results::text = '[]' THEN '[' || r.result || ']'
                        ELSE left(j.results::text, -1) || ',' || r.result || ']' END)::json,
        error = NULL, exit_code = 0, progress = 100, finished_at = %(now)s, expires_at = %(now)s + j.result_ttl,
        token = NULL, lease_expires_at = NULL, {event_row}
    FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(results)b::text[], %(event_kinds)b::text[],
                %(event_data)b::text[]) AS r(id, token, result, event_kind, event_data)
    WHERE j.id = r.id AND j.token = r.token AND j.status = 'running'
    RETURNING r.token, j.seq, j.task, j.queue, j.attempts, j.worker_id, r.event_kind, r.event_data
), batch AS (
    SELECT seq, task, queue, attempts, worker_id, coalesce(event_kind, %(event_kind)s) AS kind,
           coalesce(event_data, %(event_data_one)s) AS data
    FROM done
), {log_batch}
SELECT token,
       {wake_readers}
FROM done;

-- name: finish_failed
WITH done AS (
    UPDATE conveyor_jobs
    SET status = 'failed', error = %(error)s::json, exit_code = %(exit_code)s, finished_at = %(now)s,
        expires_at = %(now)s + result_ttl, token = NULL, lease_expires_at = NULL
    WHERE {current_run}
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: finish_retry
-- Queued again at retry_at, one retry used (the update trigger wakes workers).
WITH done AS (
    UPDATE conveyor_jobs
    SET status = 'queued', error = %(error)s::json, exit_code = %(exit_code)s, retries = retries + 1,
        scheduled_at = %(retry_at)s, token = NULL, lease_expires_at = NULL
    WHERE {current_run}
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: finish_released
-- Handed back, no retry used: by a stopping worker (due again at once, in its old place in line), or
-- by one that cannot run it (an unknown task: due at retry_at, with the reason in error, so a user
-- sees why it waits; without one, an earlier run's error stays).
WITH done AS (
    UPDATE conveyor_jobs
    SET status = 'queued', token = NULL, lease_expires_at = NULL,
        scheduled_at = coalesce(%(retry_at)s::float8, scheduled_at), error = coalesce(%(error)s::json, error)
    WHERE {current_run}
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: finish_rescued
-- Its worker died (the lease ran out): queued again, no retry used, one more rescue counted
-- (the leader fails a job rescued too often, as a poison job).
WITH done AS (
    UPDATE conveyor_jobs SET status = 'queued', rescues = rescues + 1, token = NULL, lease_expires_at = NULL
    WHERE {current_run}
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: finish_discarded
-- The job row goes, and its mailbox with it; its `discarded` event stays (until event_ttl), the
-- last word on it, and carries the job's seq and batch rows (job_seq, job_rows): its entries there
-- still resolve to it, and its history is still found.
WITH done AS (
    DELETE FROM conveyor_jobs
    WHERE {current_run}
    RETURNING id, task, queue, attempts, worker_id, seq, event_rows
), mailbox AS (
    DELETE FROM conveyor_messages WHERE job_id IN (SELECT id FROM done)
), logged AS (
    INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data, job_seq, job_rows)
    SELECT %(now)s, %(event_kind)s, id, task, queue, attempts, worker_id, %(event_data)s::json, seq, event_rows
    FROM done
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- Pipelines ---------------------------------------------------------------------------------------
-- A pipeline's outcome is written in one transaction of several statements (postgres/pipelines.py):
-- its finish_* statement first, then, only if that wrote the outcome, what goes with it.

-- name: finish_advanced
-- A pipeline's stage ended (ADVANCED, retried 0, error NULL) or it restarts after a failure (RETRY
-- with a record: retried 1, the failure in error): the row becomes the next stage's (outcome.NextStage),
-- queued or waiting (a timer, a message), fenced as every finish_*. Its event (stage_done or
-- retry_scheduled) copies the row as written, the next stage's task and queue, as every step's event
-- does. Becoming queued wakes workers (the update trigger).
WITH done AS (
    UPDATE conveyor_jobs
    SET stage = %(stage)s, task = %(task)s, queue = %(queue)s, args = %(args)s::json, kwargs = %(kwargs)s::json,
        timeout = %(timeout)s, status = %(status)s, scheduled_at = %(scheduled_at)s, wait_until = %(wait_until)s,
        waiting_for = %(waiting_for)s, deadline = %(deadline)s, results = %(results)s::json,
        stage_log = %(stage_log)s::json, inbox = NULL, progress = 0, progress_message = '', token = NULL,
        lease_expires_at = NULL, retries = retries + %(retried)s, error = %(error)s::json, exit_code = %(exit_code)s
    WHERE {current_run}
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: record_stages
-- After a finish_succeeded or finish_failed that was written, in its transaction: the pipeline's
-- stage bookkeeping (outcome.StageRecord), replacing the results finish_succeeded appended to.
UPDATE conveyor_jobs SET stage = %(stage)s, results = %(results)s::json, stage_log = %(stage_log)s::json
WHERE id = %(id)s;

-- name: take_message
-- A job that has just begun to wait on a message (finish_advanced, reset_to_stage, send_message; its
-- row locked by that transaction, so no one else takes at once): the oldest message of that name it
-- has not taken yet, marked consumed by this stage (conveyor_messages_waiting). Returns its id.
UPDATE conveyor_messages SET consumed_at = %(now)s, stage = %(stage)s
WHERE job_id = %(job_id)s AND id = (
    SELECT id FROM conveyor_messages
    WHERE job_id = %(job_id)s AND name = %(name)s AND consumed_at IS NULL
    ORDER BY at, seq
    LIMIT 1
)
RETURNING id;

-- name: resume_with_message
-- The waiting job queued again, due now, with the message take_message took as its inbox ({"id",
-- "payload"}, the payload verbatim), and its `resumed` event. Becoming queued wakes workers (the
-- update trigger).
WITH done AS (
    UPDATE conveyor_jobs AS j
    SET status = 'queued', scheduled_at = %(now)s, wait_until = NULL,
        inbox = (SELECT json_build_object('id', m.id, 'payload', m.payload) FROM conveyor_messages AS m
                 WHERE m.job_id = j.id AND m.id = %(message_id)s)
    WHERE j.id = %(id)s AND j.status = 'waiting'
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: insert_notification
-- After a finish that was written, in its transaction: the owner's notification (outcome.Notice).
INSERT INTO conveyor_notifications (owner, job_id, at, status, exit_code, data)
VALUES (%(owner)s, %(job_id)s, %(now)s, %(status)s, %(exit_code)s, %(data)s::json);

-- name: expired
-- Runs whose lease ran out, or that ran past their timeout + margin: the leader decides what each
-- does next. Only running jobs are read (conveyor_jobs_running holds just those).
SELECT {job_columns} FROM conveyor_jobs
WHERE status = 'running'
  AND (lease_expires_at < %(now)s OR (timeout IS NOT NULL AND started_at + timeout + %(margin)s < %(now)s))
ORDER BY lease_expires_at, seq
LIMIT %(limit)s;

-- name: get
SELECT {job_columns} FROM conveyor_jobs WHERE id = %(id)s;

-- name: job_filters
-- a fragment: list_jobs' and list_owned_jobs' filters (conveyor.backends.rows.list_params). A NULL filter
-- matches everything (each NULL test is folded away when the statement is planned). `search` is plain
-- text found in the args' or kwargs' JSON text (strpos: no pattern, case-sensitive; json columns keep the
-- text as written, so it matches as on SQLite), or the start of the id (the web's `q`); it scans,
-- bounded by the LIMIT.
(%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(scheduled_by)s::text IS NULL OR scheduled_by = %(scheduled_by)s)  -- every run of a schedule
  AND (%(id_prefix)s::text IS NULL OR starts_with(id, %(id_prefix)s))  -- `conveyor job 3f2a`
  AND (%(search)s::text IS NULL OR starts_with(id, %(search)s)
       OR strpos(args::text, %(search)s) > 0 OR strpos(kwargs::text, %(search)s) > 0)
  AND (%(due_before)s::float8 IS NULL OR scheduled_at <= %(due_before)s)
  AND (%(due_after)s::float8 IS NULL OR scheduled_at > %(due_after)s)

-- name: list_jobs
-- Newest first. `owner` NULL matches every job; the store runs list_owned_jobs when it is set.
SELECT {job_columns}
FROM conveyor_jobs
WHERE (%(owner)s::text IS NULL OR owner = %(owner)s) AND {job_filters}
ORDER BY seq DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: list_owned_jobs
-- list_jobs of one owner's jobs (a web user without view-others lists only theirs), newest first: read in
-- order off conveyor_jobs_owner (owner, seq), so a user with few jobs among millions costs a few reads. Its
-- own statement so that the plan psycopg prepares after a few runs (a generic one, for any parameters)
-- still uses the index, which list_jobs' `owner IS NULL OR ...` would not let it.
SELECT {job_columns}
FROM conveyor_jobs
WHERE owner = %(owner)s AND {job_filters}
ORDER BY seq DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: counts
-- A queued job not due yet counts as scheduled.
SELECT queue, CASE WHEN status = 'queued' AND scheduled_at > %(now)s THEN 'scheduled' ELSE status END AS shown,
       count(*)
FROM conveyor_jobs GROUP BY queue, shown;

-- name: cancel
-- With its `cancelled` event, only if it changed the job (a finished job stays as it is, unlogged).
WITH done AS (
    UPDATE conveyor_jobs
    SET status = 'cancelled', exit_code = 130, finished_at = %(now)s, expires_at = %(now)s + result_ttl,
        token = NULL, lease_expires_at = NULL
    WHERE id = %(id)s AND status IN ('queued', 'running', 'waiting')
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: requeue
-- With its `requeued` event, in the transaction that also runs `reset` if asked; then `reset`
-- writes the event instead, so that it shows the job as it starts over (attempt 0). Returns
-- whether it requeued the job.
WITH done AS (
    UPDATE conveyor_jobs
    SET status = 'queued', scheduled_at = %(now)s, finished_at = NULL, expires_at = NULL, exit_code = NULL,
        result = NULL
    WHERE id = %(id)s AND status IN ('failed', 'cancelled')
    RETURNING id, task, queue, attempts, worker_id
), logged AS (
    INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, task, queue, attempts, worker_id, %(event_data)s::json FROM done
    WHERE NOT %(reset)s
    RETURNING 1
)
SELECT count(*) AS requeued,
       {wake_readers}
FROM done;

-- name: reset
-- With requeue(reset=True): the job starts over, counters, error and stages zeroed; writes the
-- requeue's event, from the row as reset.
WITH done AS (
    UPDATE conveyor_jobs
    SET attempts = 0, retries = 0, rescues = 0, error = NULL, progress = 0, progress_message = '', started_at = NULL,
        worker_id = NULL, stage = 0, results = '[]'
    WHERE id = %(id)s
    RETURNING id, task, queue, attempts, worker_id
), {log_done}

-- name: reset_to_stage
-- requeue(reset=True, first=...): a finished pipeline job, succeeded included, starts over at its
-- first stage (outcome.NextStage), counters, results, stage log, inbox, result and error cleared,
-- with its `requeued` event, and its mailbox emptied (a fresh start: a message id sent before may be
-- sent again). A key another unfinished job holds raises (conveyor_jobs_key).
-- Becoming queued wakes workers (the update trigger).
WITH done AS (
    UPDATE conveyor_jobs
    SET stage = %(stage)s, task = %(task)s, queue = %(queue)s, args = %(args)s::json, kwargs = %(kwargs)s::json,
        timeout = %(timeout)s, status = %(status)s, scheduled_at = %(scheduled_at)s, wait_until = %(wait_until)s,
        waiting_for = %(waiting_for)s, deadline = %(deadline)s, results = '[]', stage_log = '[]', inbox = NULL,
        result = NULL, error = NULL, exit_code = NULL, finished_at = NULL, expires_at = NULL, attempts = 0,
        retries = 0, rescues = 0, progress = 0, progress_message = '', started_at = NULL, worker_id = NULL,
        token = NULL, lease_expires_at = NULL
    WHERE id = %(id)s AND status IN ('succeeded', 'failed', 'cancelled')
    RETURNING id, task, queue, attempts, worker_id
), emptied AS (
    DELETE FROM conveyor_messages WHERE job_id IN (SELECT id FROM done)
), {log_done}

-- Waits and the mailbox -------------------------------------------------------------------------

-- name: message_target
-- send_message's first look, in its transaction: whether the job exists, has finished, or waits on a
-- message of some name, and at which stage. FOR UPDATE: concurrent sends to the job, and a finish of
-- its run (finish_advanced), a release or a cancel, wait for this transaction's end and then see what
-- it did, so a message is never stored by one while another moves the job past it unseen.
SELECT status, waiting_for, stage FROM conveyor_jobs WHERE id = %(id)s FOR UPDATE;

-- name: message_exists
-- A finished job's mailbox may still hold this message id: a sender's retry of a message that
-- resumed the job, which has finished since, is a duplicate, not "finished".
SELECT 1 FROM conveyor_messages WHERE job_id = %(job_id)s AND id = %(id)s;

-- name: insert_message
-- A message for the job's mailbox, not taken yet, with its `message_received` event (copying the
-- job's task, queue, attempt and worker). A message id the job already has inserts nothing and
-- writes no event (the primary key: ON CONFLICT, so two concurrent senders never raise); the store
-- reports that as a duplicate.
WITH added AS (
    INSERT INTO conveyor_messages (job_id, id, name, payload, at)
    VALUES (%(job_id)s, %(id)s, %(name)s, %(payload)s::json, %(now)s)
    ON CONFLICT (job_id, id) DO NOTHING
    RETURNING job_id
), done AS (
    SELECT j.id, j.task, j.queue, j.attempts, j.worker_id FROM added JOIN conveyor_jobs AS j ON j.id = added.job_id
), {log_done}

-- name: messages
-- A job's mailbox, oldest first (then in insertion order): waiting messages and consumed ones.
SELECT job_id, id, name, payload::text, at, consumed_at, stage FROM conveyor_messages
WHERE job_id = %(job_id)s
ORDER BY at, seq;

-- name: release_waits
-- The leader: up to `limit` waiting jobs whose timer (or message time-out) ended, or whose pipeline's
-- budget ran out, are queued due now at the same stage, each with its `resumed` event ({"stage", "by":
-- deadline or timer}); the worker that claims one decides what comes next. wait_until stays, so that
-- worker sees the wait ended. The earliest first, by conveyor_jobs_waits (least() skips a NULL), not
-- a scan of the jobs; rows a send or a cancel holds are skipped (SKIP LOCKED), and matched by
-- `seq = ANY(ARRAY(...))` as in the claim. Becoming queued wakes workers (the update trigger).
WITH done AS (
    UPDATE conveyor_jobs
    SET status = 'queued', scheduled_at = %(now)s
    WHERE status = 'waiting' AND seq = ANY(ARRAY(
        SELECT seq FROM conveyor_jobs
        WHERE status = 'waiting' AND least(wait_until, deadline) <= %(now)s
        ORDER BY least(wait_until, deadline)
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ))
    RETURNING id, task, queue, attempts, worker_id,
              json_build_object('stage', stage,
                                'by', CASE WHEN deadline <= %(now)s THEN 'deadline' ELSE 'timer' END) AS data
), logged AS (
    INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, task, queue, attempts, worker_id, data FROM done
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- Notifications -----------------------------------------------------------------------------------

-- name: notifications
-- The newest `limit` notes, of `owner` (NULL: everyone's), only unread ones if `unread`, newest first
-- by id. The NULL test is folded away when the statement is planned, so one owner's are read from
-- conveyor_notifications_owner backwards.
SELECT id, owner, job_id, at, status, exit_code, data::text, read FROM conveyor_notifications
WHERE (%(owner)s::text IS NULL OR owner = %(owner)s) AND (NOT %(unread)s OR NOT read)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: mark_read
-- Only the owner's own notes, and only those still unread (the count is of those changed): these ids
-- (others' are ignored) or, with NULL, all of them.
UPDATE conveyor_notifications SET read = true
WHERE owner = %(owner)s AND NOT read AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]));

-- name: prune_notifications
-- Notes older than `before`, by age only (they outlive their jobs); the BRIN index on `at` finds them.
DELETE FROM conveyor_notifications WHERE at < %(before)s;

-- name: acquire_lock
-- Take a free or expired lock, or renew one's own, in one statement: a row comes back only if
-- `owner` holds the lock now. Concurrent takers serialise on the row (or the insert's key).
INSERT INTO conveyor_locks (name, owner, expires_at) VALUES (%(name)s, %(owner)s, %(until)s)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE conveyor_locks.owner = excluded.owner OR conveyor_locks.expires_at < %(now)s
RETURNING owner;

-- name: release_lock
DELETE FROM conveyor_locks WHERE name = %(name)s AND owner = %(owner)s;

-- name: lock_owner
-- Who holds the lock now: a lock whose expiry has passed is free (acquire_lock takes it over).
SELECT owner FROM conveyor_locks WHERE name = %(name)s AND expires_at >= %(now)s;

-- name: prune_expired
-- Finished jobs past their expiry, and their events and messages, in one statement. Their events
-- are found numbered (by conveyor_events_job; prune runs the sequencer first) or, for one written
-- since, among the few rows not numbered yet (conveyor_events_unnumbered): two deletions, as one
-- condition `a OR b` would be planned as a scan of the whole log. (A row a concurrent sequencer
-- numbers in between is left to event_ttl.)
WITH gone AS (
    DELETE FROM conveyor_jobs WHERE expires_at <= %(now)s AND status IN ('succeeded', 'failed', 'cancelled')
    RETURNING id
), forgotten AS (
    DELETE FROM conveyor_events WHERE seq IS NOT NULL AND job_id IN (SELECT id FROM gone)
), forgotten_unnumbered AS (
    DELETE FROM conveyor_events WHERE seq IS NULL AND job_id IN (SELECT id FROM gone)
), mailbox AS (
    DELETE FROM conveyor_messages WHERE job_id IN (SELECT id FROM gone)
)
SELECT count(*) FROM gone;

-- name: prune_before
-- Finished jobs that ended before a time, and their events and messages, in one statement (as
-- prune_expired).
WITH gone AS (
    DELETE FROM conveyor_jobs WHERE finished_at < %(before)s AND status IN ('succeeded', 'failed', 'cancelled')
    RETURNING id
), forgotten AS (
    DELETE FROM conveyor_events WHERE seq IS NOT NULL AND job_id IN (SELECT id FROM gone)
), forgotten_unnumbered AS (
    DELETE FROM conveyor_events WHERE seq IS NULL AND job_id IN (SELECT id FROM gone)
), mailbox AS (
    DELETE FROM conveyor_messages WHERE job_id IN (SELECT id FROM gone)
)
SELECT count(*) FROM gone;

-- name: destroy_all
-- A test hook: every job, event, lock, switch, worker, message, notification, schedule, tick
-- record, service, user, token and audit row (several statements, no parameters). conveyor_event_head
-- keeps its count, and the audit's identity its own: a seq is never given out twice.
DELETE FROM conveyor_audit;
DELETE FROM conveyor_tokens;
DELETE FROM conveyor_users;
DELETE FROM conveyor_services;
DELETE FROM conveyor_schedules;
DELETE FROM conveyor_schedule_ticks;
DELETE FROM conveyor_jobs;
DELETE FROM conveyor_locks;
DELETE FROM conveyor_events;
DELETE FROM conveyor_switches;
DELETE FROM conveyor_workers;
DELETE FROM conveyor_messages;
DELETE FROM conveyor_notifications;

-- The event log ------------------------------------------------------------------------------
-- Events are written by the statements above, with seq NULL; the sequencer numbers them later.
-- docs/postgres.md ("The event log") explains the numbering.

-- name: listen_events
-- only in this dialect: readers wait for events on a notification channel; SQLite polls its file.
LISTEN conveyor_events;

-- name: sequencer_lock
-- only in this dialect: SQLite's writers are serial, so its seq is already commit order.
-- One sequencer at a time (per schema), without waiting: if another holds it, it is numbering
-- right now and will notify what it numbered. Held to the end of the sequencer's transaction.
SELECT pg_try_advisory_xact_lock(1129270854, hashtext(current_schema()));

-- name: sequencer_lock_wait
-- only in this dialect: as sequencer_lock, but waiting for it: last_event_seq and the prunes must
-- number everything committed before they were called, not skip a round another reader runs.
SELECT pg_advisory_xact_lock(1129270854, hashtext(current_schema()));

-- name: number_events
-- only in this dialect: the sequencer (see sequencer_lock), run in a statement after the lock
-- was taken, so its snapshot sees every earlier sequencer's commit.
-- Numbers the committed rows not numbered yet (its snapshot sees no others), in insertion order,
-- after the last number given out: a row whose transaction commits later is numbered in a later
-- round, after everything numbered now, so a reader that has read up to the head never has
-- anything numbered behind its position (docs/postgres.md, "The event log"). Takes at most
-- %(batch)s rows (the oldest; the rest follow in the next round). Advances the head, notifies
-- readers if it numbered anything, and returns the head and how many it numbered.
WITH head AS MATERIALIZED (
    SELECT last FROM conveyor_event_head
), ready AS MATERIALIZED (
    SELECT e.id, (SELECT last FROM head) + sum(coalesce(e.n, 1)) OVER (ORDER BY e.id) AS seq
    FROM (SELECT id, n FROM conveyor_events WHERE seq IS NULL ORDER BY id LIMIT %(batch)s) AS e
), numbered AS (
    UPDATE conveyor_events AS e SET seq = r.seq FROM ready AS r WHERE e.id = r.id
), advanced AS (
    UPDATE conveyor_event_head SET last = (SELECT max(seq) FROM ready)
    WHERE EXISTS (SELECT FROM ready)
    RETURNING last
)
SELECT coalesce((SELECT last FROM advanced), (SELECT last FROM head)) AS last,
       (SELECT count(*) FROM ready) AS numbered,
       (SELECT count(pg_notify('conveyor_events', '')) FROM advanced) AS notified;

-- name: event_head
-- only in this dialect: the last seq given out, when another sequencer holds the lock.
SELECT last FROM conveyor_event_head;

-- name: events
-- The log's numbered rows after a seq, oldest first; a NULL filter matches everything. Rows not
-- numbered yet are never read: their place in the order is not known until the sequencer gives it.
-- A batch row (n set) is filtered once its events are read out (event_batches.read). A row whose seq
-- is past %(after)s can hold events up to n - 1 before it: the reader drops those. A job's history
-- is read by job_events instead.
SELECT seq, at, kind, job_id, task, queue, attempt, worker_id, data::text, n
FROM conveyor_events
WHERE seq > %(after)s
  AND (n IS NOT NULL OR (
      (%(task)s::text IS NULL OR task = %(task)s)
      AND (%(queue)s::text IS NULL OR queue = %(queue)s)
      AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))))
ORDER BY seq
LIMIT %(limit)s;

-- name: event_jobs
-- The jobs batch rows name by seq (event_batches.read resolves them): those that exist, and those
-- discarded whose `discarded` event is still in the log (it keeps their seq). Seqs are never reused.
SELECT seq, id FROM conveyor_jobs WHERE seq = ANY(%(seqs)s::bigint[])
UNION ALL
SELECT job_seq, job_id FROM conveyor_events WHERE job_seq = ANY(%(seqs)s::bigint[]);

-- name: job_event_rows
-- only in this dialect: SQLite reads a job's seq and marks by job_seq (its discarded jobs' entries are
-- rewritten to name them by id).
-- A job's seq and batch rows: from its row, or, once it is discarded, from its `discarded` event
-- (by conveyor_events_job). No row: a job pruned with its events, or never there.
SELECT seq, event_rows FROM conveyor_jobs WHERE id = %(job_id)s
UNION ALL
(SELECT job_seq, job_rows FROM conveyor_events WHERE job_id = %(job_id)s AND seq IS NOT NULL AND job_seq IS NOT NULL
 LIMIT 1)
LIMIT 1;

-- name: job_events
-- One job's numbered rows after a seq, oldest first: its rows of one event (conveyor_events_job) and
-- the batch rows its steps noted (%(rows)s, by primary key), filtered by event_batches once read out.
SELECT seq, at, kind, job_id, task, queue, attempt, worker_id, data::text, n
FROM conveyor_events
WHERE job_id = %(job_id)s AND seq > %(after)s
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(kinds)s::text[] IS NULL OR kind = ANY(%(kinds)s::text[]))
UNION ALL
SELECT seq, at, kind, job_id, task, queue, attempt, worker_id, data::text, n
FROM conveyor_events
WHERE id = ANY(%(rows)s::bigint[]) AND seq > %(after)s
ORDER BY seq;

-- name: prune_events
-- Events older than event_ttl (the leader's prune duty); the BRIN index on `at` finds them. Returns
-- how many events the deleted rows held (a batch row's entries, of jobs still there or not).
WITH gone AS (
    DELETE FROM conveyor_events WHERE at < %(before)s RETURNING n
)
SELECT coalesce(sum(coalesce(n, 1)), 0) FROM gone;

-- Switches -------------------------------------------------------------------------------------

-- name: switch_off
-- Turn a queue, a task or everything off, with its event, only if it was on (no row yet).
WITH added AS (
    INSERT INTO conveyor_switches (scope, name, since) VALUES (%(scope)s, %(name)s, %(now)s)
    ON CONFLICT (scope, name) DO NOTHING
    RETURNING scope
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, data)
    SELECT %(now)s, %(event_kind)s, %(task)s, %(queue)s, %(event_data)s::json FROM added
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: switch_on
-- Turn it back on, with its event, only if it was off; returns whether it was. Idle workers of
-- the queues with queued jobs it concerns are woken (as for a new job): their next claim may now
-- find work.
WITH removed AS (
    DELETE FROM conveyor_switches WHERE scope = %(scope)s AND name = %(name)s
    RETURNING scope
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, data)
    SELECT %(now)s, %(event_kind)s, %(task)s, %(queue)s, %(event_data)s::json FROM removed
    RETURNING 1
), workers_woken AS (
    SELECT count(pg_notify('conveyor_jobs', q.queue)) AS queues
    FROM (
        SELECT DISTINCT queue FROM conveyor_jobs
        WHERE status = 'queued' AND (%(queue)s::text IS NULL OR queue = %(queue)s)
          AND (%(task)s::text IS NULL OR task = %(task)s)
    ) AS q
    WHERE EXISTS (SELECT FROM removed)
)
SELECT EXISTS (SELECT FROM removed), (SELECT queues FROM workers_woken),
       {wake_readers};

-- name: switches
SELECT scope, name FROM conveyor_switches;

-- The worker registry ----------------------------------------------------------------------------

-- name: register_worker
-- Insert, or replace (a worker that registers again after its row was pruned or marked dead),
-- with its `worker_started` event.
WITH registered AS (
    INSERT INTO conveyor_workers (id, host, pid, queues, concurrency, version, started_at, last_seen,
                                  in_flight, state, stop_requested, leader)
    VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s::json, %(concurrency)s, %(version)s, %(started_at)s, %(now)s,
            %(in_flight)s, %(state)s, %(stop_requested)s, %(leader)s)
    ON CONFLICT (id) DO UPDATE SET
        host = excluded.host, pid = excluded.pid, queues = excluded.queues, concurrency = excluded.concurrency,
        version = excluded.version, started_at = excluded.started_at, last_seen = excluded.last_seen,
        in_flight = excluded.in_flight, state = excluded.state, stop_requested = excluded.stop_requested,
        leader = excluded.leader
    RETURNING id
), logged AS (
    INSERT INTO conveyor_events (at, kind, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, %(event_data)s::json FROM registered
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: beat_worker
-- A worker's heartbeat: its row refreshed; returns whether a stop was asked (no row: re-register).
UPDATE conveyor_workers
SET last_seen = %(now)s, in_flight = %(in_flight)s, state = %(state)s, leader = %(leader)s
WHERE id = %(id)s
RETURNING stop_requested;

-- name: end_worker
-- A clean exit: STOPPED, with its `worker_stopped` event.
WITH ended AS (
    UPDATE conveyor_workers SET state = 'stopped', last_seen = %(now)s, in_flight = 0, leader = false
    WHERE id = %(id)s
    RETURNING id
), logged AS (
    INSERT INTO conveyor_events (at, kind, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, %(event_data)s::json FROM ended
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: list_workers
-- Newest first.
SELECT id, host, pid, queues::text, concurrency, version, started_at, last_seen, in_flight, state,
       stop_requested, leader
FROM conveyor_workers
ORDER BY started_at DESC, id;

-- name: request_worker_stop
-- Ask these workers (running or stopping) to stop: each gets a `stop_requested` event. Returns their ids.
WITH asked AS (
    UPDATE conveyor_workers SET stop_requested = true
    WHERE id = ANY(%(ids)s::text[]) AND state IN ('running', 'stopping')
    RETURNING id
), logged AS (
    INSERT INTO conveyor_events (at, kind, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, %(event_data)s::json FROM asked
    RETURNING 1
)
SELECT id,
       {wake_readers}
FROM asked;

-- name: mark_dead_workers
-- The leader: running or stopping workers not seen since a time are DEAD, each with a `worker_dead` event.
WITH dead AS (
    UPDATE conveyor_workers SET state = 'dead', leader = false
    WHERE state IN ('running', 'stopping') AND last_seen < %(seen_before)s
    RETURNING id
), logged AS (
    INSERT INTO conveyor_events (at, kind, worker_id, data)
    SELECT %(now)s, %(event_kind)s, id, %(event_data)s::json FROM dead
    RETURNING 1
)
SELECT id,
       {wake_readers}
FROM dead;

-- name: prune_workers
DELETE FROM conveyor_workers WHERE state IN ('stopped', 'dead') AND last_seen < %(before)s;

-- name: oldest_due
-- Per queue with due queued jobs: the oldest due time. The queues are found by a skip scan of
-- conveyor_jobs_claim (one probe per queue), then one probe per (queue, priority): no scan of a
-- long backlog. Switches are not considered (health reports what waits, paused or not).
WITH RECURSIVE queues AS (
    (SELECT queue FROM conveyor_jobs WHERE status = 'queued' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM conveyor_jobs AS j WHERE j.status = 'queued' AND j.queue > q.queue
            ORDER BY j.queue LIMIT 1)
    FROM queues AS q WHERE q.queue IS NOT NULL
)
SELECT q.queue, min(t.scheduled_at)
FROM queues AS q
CROSS JOIN unnest(%(priorities)s::int[]) AS p(value)
CROSS JOIN LATERAL (
    SELECT scheduled_at FROM conveyor_jobs
    WHERE status = 'queued' AND queue = q.queue AND priority = p.value
    ORDER BY scheduled_at
    LIMIT 1
) AS t
WHERE q.queue IS NOT NULL AND t.scheduled_at <= %(now)s
GROUP BY q.queue;

-- Schedules ---------------------------------------------------------------------------------------
-- postgres/schedules.py runs these, on the main pool (committed durably: an acknowledged tick survives
-- a crash). What to fire is decided in Python (conveyor.scheduling); fire writes it in one transaction:
-- advance_schedule (whose row lock serialises concurrent fires of a schedule), record_ticks, the jobs
-- (insert or insert_copy, as enqueue), fired (with the ticks' events), trim_ticks.
-- A schedule's events name no job, task nor queue: their data names the schedule.

-- name: schedule_columns
-- a fragment: a schedule's columns, in the order of conveyor.backends.rows.SCHEDULE_COLUMNS (row_to_schedule).
name, cron, tz, every, anchor, target::text, missed, catch_up, grace, overlap, jitter, paused, source, next_at,
last_tick_at, last_job_id, paused_at, created_at, updated_at, owner

-- name: put_schedule
-- A new schedule, or the new spec, target, policies, next_at, source and owner of the one of that name (the
-- owner is replaced like the spec: a put says whose the schedule is): its tick history, last tick and job,
-- created_at, and whether (and since when) it is paused stay as they were (a worker's sync must not
-- resume what a user paused). An unchanged spec (cron, tz, every, anchor) keeps next_at too: two workers
-- syncing a new code schedule at once must not move back, or skip, a tick the first one's scheduler
-- already fired or planned. With its `schedule_put` event, which says whether it
-- was new: `xmax = 0` in RETURNING is true for a row this statement inserted, false for one it updated
-- (the updated version carries this transaction's id as the old one's locker), also when a concurrent put
-- of the same name made it update after all.
WITH put AS (
    INSERT INTO conveyor_schedules (name, cron, tz, every, anchor, target, missed, catch_up, grace, overlap,
                                    jitter, paused, source, owner, next_at, paused_at, created_at, updated_at)
    VALUES (%(name)s, %(cron)s, %(tz)s, %(every)s, %(anchor)s, %(target)s::json, %(missed)s, %(catch_up)s,
            %(grace)s, %(overlap)s, %(jitter)s, %(paused)s, %(source)s, %(owner)s, %(next_at)s, %(paused_at)s,
            %(now)s, %(now)s)
    ON CONFLICT (name) DO UPDATE SET
        cron = excluded.cron, tz = excluded.tz, every = excluded.every, anchor = excluded.anchor,
        target = excluded.target, missed = excluded.missed, catch_up = excluded.catch_up, grace = excluded.grace,
        overlap = excluded.overlap, jitter = excluded.jitter, source = excluded.source, owner = excluded.owner,
        next_at = CASE
            WHEN conveyor_schedules.cron IS NOT DISTINCT FROM excluded.cron
             AND conveyor_schedules.tz IS NOT DISTINCT FROM excluded.tz
             AND conveyor_schedules.every IS NOT DISTINCT FROM excluded.every
             AND conveyor_schedules.anchor IS NOT DISTINCT FROM excluded.anchor
            THEN conveyor_schedules.next_at ELSE excluded.next_at
        END,
        updated_at = excluded.updated_at
    RETURNING name, (xmax = 0) AS new
), logged AS (
    INSERT INTO conveyor_events (at, kind, data)
    SELECT %(now)s, %(event_kind)s, json_build_object('schedule', name, 'new', new) FROM put
    RETURNING 1
)
SELECT new,
       {wake_readers}
FROM put;

-- name: get_schedule
SELECT {schedule_columns} FROM conveyor_schedules WHERE name = %(name)s;

-- name: list_schedules
SELECT {schedule_columns} FROM conveyor_schedules ORDER BY name;

-- name: remove_schedule
-- The schedule, its tick records and its `schedule_removed` event, in one statement. Its jobs stay: they
-- are jobs like any other, pruned when they expire. Returns how many schedules it deleted (0 or 1).
WITH gone AS (
    DELETE FROM conveyor_schedules WHERE name = %(name)s
    RETURNING name
), forgotten AS (
    DELETE FROM conveyor_schedule_ticks WHERE schedule IN (SELECT name FROM gone)
), logged AS (
    INSERT INTO conveyor_events (at, kind, data)
    SELECT %(now)s, %(event_kind)s, %(event_data)s::json FROM gone
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: retire_schedules
-- A worker's sync: schedules declared in code (source 'code') that its code declares no more (not in
-- `keep`) are deleted with their tick records, each with a `schedule_removed` event ({"retired": true}).
-- Stored ones (app.schedule at run time) are never retired. Returns their names. The rows are locked by
-- name first: workers that start together all sync, and take the locks in one order (no deadlock).
WITH gone AS (
    DELETE FROM conveyor_schedules
    WHERE name IN (SELECT name FROM conveyor_schedules
                   WHERE source = 'code' AND name <> ALL(%(keep)s::text[])
                   ORDER BY name
                   FOR UPDATE)
    RETURNING name
), forgotten AS (
    DELETE FROM conveyor_schedule_ticks WHERE schedule IN (SELECT name FROM gone)
), logged AS (
    INSERT INTO conveyor_events (at, kind, data)
    SELECT %(now)s, %(event_kind)s, json_build_object('schedule', name, 'retired', true) FROM gone
    RETURNING 1
)
SELECT name,
       {wake_readers}
FROM gone;

-- name: pause_schedule
-- Pause (since now) or resume (next_at becomes the caller's first tick after now, so no burst of the
-- ticks skipped meanwhile), with its `schedule_paused` / `schedule_resumed` event. No row changes if it
-- already is so: no event. Returns how many events it wrote (0 or 1).
WITH done AS (
    UPDATE conveyor_schedules
    SET paused = %(paused)s, paused_at = CASE WHEN %(paused)s THEN %(now)s END,
        next_at = CASE WHEN %(paused)s THEN next_at ELSE coalesce(%(next_at)s, next_at) END, updated_at = %(now)s
    WHERE name = %(name)s AND paused <> %(paused)s
    RETURNING name
), logged AS (
    INSERT INTO conveyor_events (at, kind, data)
    SELECT %(now)s, %(event_kind)s, %(event_data)s::json FROM done
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: due_schedules
-- The schedules not paused whose next tick has come, the most overdue first, read in order straight off
-- conveyor_schedules_due (partial: NOT paused, as this condition says); no scan, no sort.
SELECT {schedule_columns} FROM conveyor_schedules
WHERE NOT paused AND next_at <= %(now)s
ORDER BY next_at, name
LIMIT %(limit)s;

-- name: advance_schedule
-- fire's compare-and-set, the first statement of its transaction: next_at moves only if it still is
-- `expected`, the value the caller planned from. A concurrent fire of the same schedule waits for this
-- row's lock until this transaction ends, then re-reads the row and finds next_at moved: no row, and the
-- store writes nothing else (another scheduler fired these ticks; or the schedule is gone). A paused
-- schedule fires nothing: a pass that read it before pause_schedule committed writes nothing after.
UPDATE conveyor_schedules SET next_at = %(next_at)s WHERE name = %(name)s AND next_at = %(expected)s AND NOT paused;

-- name: record_ticks
-- A fire's ticks, one record each (the arrays, in order), its outcome and the job it enqueues (NULL for
-- none). A tick already recorded inserts nothing (the primary key): it is not returned, and the store
-- enqueues nothing for it, whatever the compare-and-set said. Returns the tick_at of each tick recorded.
INSERT INTO conveyor_schedule_ticks (schedule, tick_at, outcome, job_id, at, data)
SELECT %(name)s, t.tick_at, t.outcome, t.job_id, %(now)s, t.data::json
FROM unnest(%(tick_ats)s::float8[], %(outcomes)s::text[], %(job_ids)s::text[], %(data)s::text[])
     AS t(tick_at, outcome, job_id, data)
ON CONFLICT (schedule, tick_at) DO NOTHING
RETURNING tick_at;

-- name: set_tick_job
-- A tick whose job's key was held by an unfinished job (enqueue returned that job instead of inserting
-- one): its record names the job that holds the key.
UPDATE conveyor_schedule_ticks SET job_id = %(job_id)s WHERE schedule = %(name)s AND tick_at = %(tick_at)s;

-- name: fired
-- After a fire's ticks were recorded and their jobs enqueued, in its transaction: the last tick that
-- enqueued a job, and that job (if one did: last_job_id not NULL), and a `schedule_tick` event per tick
-- recorded, in the order of `event_data` (JSON texts: rows.tick_row's data, decided in Python once the
-- jobs are known).
WITH updated AS (
    UPDATE conveyor_schedules SET last_tick_at = %(last_tick_at)s, last_job_id = %(last_job_id)s
    WHERE name = %(name)s AND %(last_job_id)s::text IS NOT NULL
), logged AS (
    INSERT INTO conveyor_events (at, kind, data)
    SELECT %(now)s, %(event_kind)s, e.data::json
    FROM unnest(%(event_data)s::text[]) WITH ORDINALITY AS e(data, n)
    ORDER BY e.n
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: trim_ticks
-- The audit trail is bounded: a fire keeps the newest `keep` tick records of its schedule and deletes the
-- older ones, all found in one range of the primary key (a one-second schedule records 86,400 a day).
DELETE FROM conveyor_schedule_ticks
WHERE schedule = %(name)s
  AND tick_at <= (SELECT tick_at FROM conveyor_schedule_ticks WHERE schedule = %(name)s
                  ORDER BY tick_at DESC LIMIT 1 OFFSET %(keep)s);

-- name: schedule_ticks
-- A schedule's newest `limit` tick records, newest first: a range of the primary key read backwards.
SELECT schedule, tick_at, outcome, job_id, at, data::text FROM conveyor_schedule_ticks
WHERE schedule = %(name)s
ORDER BY tick_at DESC
LIMIT %(limit)s;

-- Services ----------------------------------------------------------------------------------------
-- postgres/services.py runs these, on the main pool (committed durably: a taken or ended run survives
-- a crash of the server). What a run's end means is decided in Python (conveyor.service_policy); these
-- write it. Each statement writes its events itself (`logged`), the instance and replica in their data,
-- the service as the event's task and the instance's queue as its queue. The steps of a run (claim,
-- renew, running, end) are fenced by the row's token. Rows are locked in one order, (name, replica),
-- by every statement that locks several (claim_services skips locked rows instead): no deadlock.

-- name: service_columns
-- a fragment: a replica's columns, in the order of conveyor.backends.service_rows.SERVICE_COLUMNS
-- (row_to_service); the JSON ones as text, decoded by conveyor.codec.
name, replica, service, queue, params::text, source, local_to, wanted, generation, status, worker_id, token,
lease_until, run_generation, started_at, free_since, not_before, restarts, crashes::text, last_error::text,
created_at, updated_at, owner

-- name: create_service
-- A new instance: its `replicas` rows (PENDING, or STOPPED if not wanted; generation 0, due at once:
-- not_before 0; free since now: spreading waits from now; `owner` on each) and one `service_created`
-- event, in one statement. An instance of that name already there inserts nothing (no event); one created concurrently
-- makes the primary key refuse the whole statement (the caller answers False), so an instance never
-- mixes the replicas of two creates. Returns how many rows it inserted.
WITH created AS (
    INSERT INTO conveyor_services (name, replica, service, queue, params, source, local_to, wanted, status,
                                   free_since, created_at, updated_at, owner)
    SELECT %(name)s, r, %(service)s, %(queue)s, %(params)s::jsonb, %(source)s, %(local_to)s, %(wanted)s,
           %(status)s, %(now)s, %(now)s, %(now)s, %(owner)s
    FROM generate_series(0, %(replicas)s - 1) AS r
    WHERE NOT EXISTS (SELECT FROM conveyor_services WHERE name = %(name)s)
    RETURNING replica
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, data)
    SELECT %(now)s, %(event_kind)s, %(service)s, %(queue)s, %(event_data)s::json
    WHERE EXISTS (SELECT FROM created)
    RETURNING 1
)
SELECT (SELECT count(*) FROM created) AS created,
       {wake_readers};

-- name: lock_service
-- only in this dialect: SQLite's write transaction already excludes every other writer.
-- The first statement of the transactions of a resize (set_service_queue, add_service_replicas,
-- drop_service_replicas), control_service and remove_service: the instance's rows locked, replica 0
-- first. Every instance has a replica 0 (a resize keeps it), so these steps on one instance run one
-- after the other; and the statements after this one take their snapshots once the lock is granted, so
-- they see every row a step before wrote (rows a concurrent resize inserted among them, which a single
-- statement's older snapshot would miss).
SELECT replica FROM conveyor_services WHERE name = %(name)s ORDER BY replica FOR UPDATE;

-- name: set_service_queue
-- resize_service's first step, after lock_service: the instance's queue, on every row (no row changes if
-- it is that already: the store adds up the rows this and the next two change to tell whether anything did).
UPDATE conveyor_services SET queue = %(queue)s, updated_at = %(now)s WHERE name = %(name)s AND queue <> %(queue)s;

-- name: add_service_replicas
-- resize_service growing an instance: the replicas 0 .. `replicas` - 1 it lacks, copying replica 0's
-- service, params, source, local_to, wanted, generation and owner; PENDING (due at once, free since now) or STOPPED
-- as replica 0 is wanted or not. No instance: no replica 0, no row. The rows are all there to see:
-- lock_service made this transaction wait for any other resize of the instance, and this statement's
-- snapshot is taken after.
INSERT INTO conveyor_services (name, replica, service, queue, params, source, local_to, wanted, generation,
                               status, free_since, created_at, updated_at, owner)
SELECT f.name, r, f.service, %(queue)s, f.params, f.source, f.local_to, f.wanted, f.generation,
       CASE WHEN f.wanted THEN 'pending' ELSE 'stopped' END, %(now)s, %(now)s, %(now)s, f.owner
FROM conveyor_services AS f, generate_series(0, %(replicas)s - 1) AS r
WHERE f.name = %(name)s AND f.replica = 0
  AND NOT EXISTS (SELECT FROM conveyor_services AS e WHERE e.name = f.name AND e.replica = r);

-- name: drop_service_replicas
-- resize_service shrinking an instance: the rows from `replicas` up go, held or not (no service_removed:
-- the instance stays). Their holders find their tokens gone at their next renewal and stop.
DELETE FROM conveyor_services WHERE name = %(name)s AND replica >= %(replicas)s;

-- name: log_service_resized
-- only in this dialect: SQLite writes the event from Python (service_of, then its row as any event's).
-- After the three above, in their transaction, when they changed a row: one `service_resized` event
-- (data: the replicas and queue now), named by replica 0. A sync that changes nothing writes none.
WITH logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, data)
    SELECT %(now)s, %(event_kind)s, service, queue, %(event_data)s::json
    FROM conveyor_services WHERE name = %(name)s AND replica = 0
    RETURNING 1
)
SELECT {wake_readers};

-- name: control_service
-- After lock_service: a user's start, stop, restart or reload of every replica, with one
-- `service_requested` event (data: the action). START: wanted; STOPPED and FAILED rows PENDING, due now,
-- crashes and error cleared; a PENDING row waiting out a crash's back-off due now, crashes and error
-- cleared. STOP: not wanted; PENDING rows STOPPED, held ones STOPPING (their workers stop them). RESTART and RELOAD: wanted, generation + 1, held rows STOPPING, STOPPED and FAILED ones
-- PENDING as for START; RELOAD replaces params (when given). A START on a row STOPPING after a STOP
-- (not wanted) is a restart: wanted, generation + 1, so its worker stops the old run (if it had not seen
-- the stop yet) and a worker takes the new generation; end_service_run writes PENDING for a run that
-- ended STOPPED meanwhile, as the row is wanted again. Returns the rows after, by replica (none: no such instance,
-- nothing written).
WITH changed AS (
    UPDATE conveyor_services
    SET wanted = %(action)s::text <> 'stop',
        generation = generation + CASE
            WHEN %(action)s::text IN ('restart', 'reload') THEN 1
            WHEN %(action)s::text = 'start' AND status = 'stopping' AND NOT wanted THEN 1
            ELSE 0
        END,
        params = CASE WHEN %(action)s::text = 'reload' THEN coalesce(%(params)s::jsonb, params) ELSE params END,
        status = CASE
            WHEN %(action)s::text = 'stop' AND status = 'pending' THEN 'stopped'
            WHEN %(action)s::text = 'stop' AND status IN ('starting', 'running') THEN 'stopping'
            WHEN %(action)s::text IN ('restart', 'reload') AND status IN ('starting', 'running') THEN 'stopping'
            WHEN %(action)s::text <> 'stop' AND status IN ('stopped', 'failed') THEN 'pending'
            ELSE status END,
        not_before = CASE WHEN %(action)s::text <> 'stop' AND status IN ('pending', 'stopped', 'failed')
                          THEN %(now)s ELSE not_before END,
        free_since = CASE WHEN %(action)s::text <> 'stop' AND status IN ('stopped', 'failed')
                          THEN %(now)s ELSE free_since END,
        crashes = CASE WHEN %(action)s::text <> 'stop' AND status IN ('pending', 'stopped', 'failed')
                       THEN '[]'::jsonb ELSE crashes END,
        last_error = CASE WHEN %(action)s::text <> 'stop' AND status IN ('pending', 'stopped', 'failed')
                          THEN NULL ELSE last_error END,
        updated_at = %(now)s
    WHERE name = %(name)s
    RETURNING *
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, data)
    SELECT %(now)s, %(event_kind)s, service, queue, %(event_data)s::json
    FROM (SELECT service, queue FROM changed ORDER BY replica LIMIT 1) AS one
    RETURNING 1
)
SELECT {service_columns},
       {wake_readers}
FROM changed
ORDER BY replica;

-- name: remove_service
-- After lock_service: every row of the instance (holders find their tokens gone at their next renewal,
-- and stop), with one `service_removed` event. Returns how many rows it deleted (0: no such instance,
-- nothing written).
WITH gone AS (
    DELETE FROM conveyor_services WHERE name = %(name)s
    RETURNING replica, service, queue
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, data)
    SELECT %(now)s, %(event_kind)s, service, queue, %(event_data)s::json
    FROM (SELECT service, queue FROM gone ORDER BY replica LIMIT 1) AS one
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS removed,
       {wake_readers};

-- name: list_services
-- Every replica, or the instance `name`'s, by name and replica (the primary key's order).
SELECT {service_columns} FROM conveyor_services
WHERE %(name)s::text IS NULL OR name = %(name)s
ORDER BY name, replica;

-- name: stop_expired_services
-- claim_services' first step, in its transaction: a replica asked to stop (not wanted) whose holder's lease
-- ran out is STOPPED (its worker is gone before it could stop it, so nothing runs it any more), whatever
-- its service or queue (no worker has to serve its queue for a stop to finish), each with a
-- `service_stopped` event (why: lease expired). worker_id stays: who held it last. Rows another step has
-- locked are passed over (SKIP LOCKED): a claim never waits; the next one finds them.
WITH lapsed AS MATERIALIZED (
    SELECT name AS lapsed_name, replica AS lapsed_replica FROM conveyor_services
    WHERE NOT wanted AND status IN ('starting', 'running', 'stopping') AND lease_until < %(now)s
    ORDER BY name, replica
    FOR UPDATE SKIP LOCKED
), stopped AS (
    UPDATE conveyor_services
    SET status = 'stopped', token = NULL, lease_until = NULL, run_generation = NULL, free_since = %(now)s,
        updated_at = %(now)s
    FROM lapsed
    WHERE name = lapsed_name AND replica = lapsed_replica
    RETURNING name, replica, service, queue, worker_id
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, worker_id, data)
    SELECT %(now)s, %(event_kind)s, service, queue, worker_id,
           json_build_object('service', name, 'replica', replica, 'why', %(why)s::text)
    FROM stopped
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: claim_services
-- only in this dialect: SQLite picks the rows (claimable_services), then takes each (take_service), under
-- its one write lock; here one statement picks and takes them, passing over locked rows.
-- A worker's keeper takes up to `limit` rows of the services it runs, after stop_expired_services in the
-- same transaction. `picked`: rows local to no worker or to this one, wanted, and either PENDING and due
-- or held with their lease run out (their worker is gone: taken over); rows of the instances in `spread`
-- (this worker runs a replica of them already) only if free since `spread_before` (free: let go at
-- `free_since` if PENDING, at `lease_until` if held), so replicas spread over workers while others are
-- there to take them; the longest free first. FOR UPDATE SKIP LOCKED: a row another claimer (or any other
-- step) has locked is passed over, so concurrent claimers never take the same row and never wait for each
-- other. Each row taken is STARTING with a fresh token (a uuid4's hex), this worker, a lease and the
-- generation it runs, with a `service_assigned` event (data: worker_id, and `from`: the worker whose lease
-- ran out). Each row comes with when it was free: the order it was taken in.
WITH picked AS MATERIALIZED (
    SELECT name AS picked_name, replica AS picked_replica, status AS was, worker_id AS was_worker,
           CASE WHEN status = 'pending' THEN coalesce(free_since, created_at) ELSE lease_until END AS free
    FROM conveyor_services
    WHERE service = ANY(%(services)s::text[])
      AND (local_to IS NULL OR local_to = %(worker_id)s)
      AND wanted
      AND ((status = 'pending' AND not_before <= %(now)s)
           OR (status IN ('starting', 'running', 'stopping') AND lease_until < %(now)s))
      AND (name <> ALL(%(spread)s::text[])
           OR CASE WHEN status = 'pending' THEN coalesce(free_since, created_at) ELSE lease_until END
              <= %(spread_before)s)
    ORDER BY free, name, replica
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), taken AS (
    UPDATE conveyor_services
    SET status = 'starting', worker_id = %(worker_id)s, token = replace(gen_random_uuid()::text, '-', ''),
        lease_until = %(until)s, run_generation = generation, started_at = NULL, updated_at = %(now)s
    FROM picked
    WHERE name = picked_name AND replica = picked_replica
    RETURNING conveyor_services.*, was, was_worker, free
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, worker_id, data)
    SELECT %(now)s, %(event_kind)s, service, queue, worker_id,
           json_strip_nulls(json_build_object('service', name, 'replica', replica, 'worker_id', worker_id,
                                              'from', CASE WHEN was <> 'pending' THEN was_worker END))
    FROM taken
    RETURNING 1
)
SELECT {service_columns}, free,
       {wake_readers}
FROM taken;

-- name: renew_services
-- A keeper's renewal: the lease of every row this worker holds with one of these tokens runs to `until`;
-- returns those rows (a token missing from the answer is lost: taken over or removed), by name and
-- replica. Never touches another row: the token and the worker must match, and the row be held. The
-- rows are locked in (name, replica) order first, as every step that locks several does.
WITH mine AS MATERIALIZED (
    SELECT name AS mine_name, replica AS mine_replica FROM conveyor_services
    WHERE worker_id = %(worker_id)s AND token = ANY(%(tokens)s::text[])
      AND status IN ('starting', 'running', 'stopping')
    ORDER BY name, replica
    FOR UPDATE
), renewed AS (
    UPDATE conveyor_services SET lease_until = %(until)s
    FROM mine
    WHERE name = mine_name AND replica = mine_replica
    RETURNING conveyor_services.*
)
SELECT {service_columns} FROM renewed ORDER BY name, replica;

-- name: service_running
-- The run's function has started: STARTING -> RUNNING, started now, with a `service_started` event (data:
-- the worker and the generation it runs). Nothing (no row, no event) if the token is not current or
-- the row is not STARTING (a stop or restart made it STOPPING). Returns how many events it wrote (0 or 1).
WITH started AS (
    UPDATE conveyor_services SET status = 'running', started_at = %(now)s, updated_at = %(now)s
    WHERE name = %(name)s AND replica = %(replica)s AND token = %(token)s AND status = 'starting'
    RETURNING name, replica, service, queue, worker_id, run_generation
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, worker_id, data)
    SELECT %(now)s, %(event_kind)s, service, queue, worker_id,
           json_build_object('service', name, 'replica', replica, 'worker_id', worker_id,
                             'generation', run_generation)
    FROM started
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: end_service_run
-- How a run ended (service_rows.end_params), fenced by its token: no longer held (token, lease and
-- run_generation cleared, worker_id kept as who ran it last, free since now), its status (STOPPED instead
-- of PENDING if it is no longer wanted, PENDING instead of STOPPED if a newer generation is wanted),
-- not_before, restarts + 1 if it restarted, crashes and last_error if given (NULL: kept), with the end's
-- event (the worker that ran it in its worker_id). Nothing (no row, no event) if the token is not current.
-- Returns how many events it wrote (0 or 1).
WITH ended AS (
    UPDATE conveyor_services
    SET status = CASE
            WHEN NOT wanted AND %(status)s::text = 'pending' THEN 'stopped'
            WHEN wanted AND %(status)s::text = 'stopped' AND generation <> run_generation THEN 'pending'
            ELSE %(status)s::text
        END,
        token = NULL, lease_until = NULL, run_generation = NULL, free_since = %(now)s,
        not_before = %(not_before)s, restarts = restarts + %(restarted)s,
        crashes = coalesce(%(crashes)s::jsonb, crashes), last_error = coalesce(%(last_error)s::jsonb, last_error),
        updated_at = %(now)s
    WHERE name = %(name)s AND replica = %(replica)s AND token = %(token)s
    RETURNING service, queue, worker_id
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, worker_id, data)
    SELECT %(now)s, %(event_kind)s, service, queue, worker_id, %(event_data)s::json FROM ended
    RETURNING 1
)
SELECT count(*) AS written,
       {wake_readers}
FROM logged;

-- name: forget_local_services
-- The LOCAL instances of these workers (dead, or stopped without removing them), every row, locked in
-- (name, replica) order first, with one `service_removed` event per instance (data: local_to, the worker).
-- Returns how many rows it deleted.
WITH doomed AS MATERIALIZED (
    SELECT name AS doomed_name, replica AS doomed_replica FROM conveyor_services
    WHERE local_to = ANY(%(worker_ids)s::text[])
    ORDER BY name, replica
    FOR UPDATE
), gone AS (
    DELETE FROM conveyor_services USING doomed
    WHERE name = doomed_name AND replica = doomed_replica
    RETURNING name, service, queue, local_to
), logged AS (
    INSERT INTO conveyor_events (at, kind, task, queue, data)
    SELECT %(now)s, %(event_kind)s, min(service), min(queue),
           json_build_object('service', name, 'local_to', min(local_to))
    FROM gone
    GROUP BY name
    ORDER BY name
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS removed,
       {wake_readers};

-- Accounts ----------------------------------------------------------------------------------------
-- postgres/accounts.py runs these (migrations/0007_accounts.sql), on the main pool (committed durably:
-- an acknowledged new token or revocation survives a crash of the server): the HTTP API's users, their
-- tokens (the SHA-256 of the secret only) and the audit log. Few rows: every step reads a primary key or
-- an index. No events: the audit log is the record of these changes.

-- name: token_columns
-- a fragment: a token's columns, in the order of conveyor.backends.rows.TOKEN_COLUMNS (row_to_token).
id, user_name, label, digest, created_at, last_used_at, revoked_at

-- name: put_user
-- A new user (created now), or the new permissions of the one of that name; its created_at and tokens
-- stay. Returns whether it was new: `xmax = 0` is true for a row this statement inserted, false for one it
-- updated (also when a concurrent put of the same name made it update after all).
INSERT INTO conveyor_users (name, permissions, created_at) VALUES (%(name)s, %(permissions)s::jsonb, %(now)s)
ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions
RETURNING (xmax = 0) AS new;

-- name: get_user
-- One user, by the primary key; permissions as JSON text.
SELECT name, permissions::text, created_at FROM conveyor_users WHERE name = %(name)s;

-- name: list_users
-- Every user, by name (the primary key's order).
SELECT name, permissions::text, created_at FROM conveyor_users ORDER BY name;

-- name: remove_user
-- The user, first in remove_user's transaction (delete_user_tokens follows). Their jobs, schedules and
-- services stay, owned by the name (a user added again by that name owns them again). Returns the name
-- (no row: no such user).
DELETE FROM conveyor_users WHERE name = %(name)s RETURNING name;

-- name: delete_user_tokens
-- remove_user's second statement, in its transaction: every token of the user, off conveyor_tokens_user.
-- A statement of its own, not a CTE of remove_user: if an add_token held the user's row (its key share
-- lock), the delete above waited for its commit, and only a statement started after that sees its token.
DELETE FROM conveyor_tokens WHERE user_name = %(name)s;

-- name: add_token
-- A new token, only if its user exists, whose row it locks (FOR KEY SHARE) until commit: a concurrent
-- remove_user either waits for this token to commit (and then deletes it: delete_user_tokens) or deleted
-- the user first (then no row is selected, nothing inserted: the store raises StoreError, no such user).
-- A taken id breaks the primary key (UniqueViolation: StoreError too). Returns the id inserted.
INSERT INTO conveyor_tokens (id, user_name, label, digest, created_at)
SELECT %(id)s, name, %(label)s, %(digest)s, %(created_at)s
FROM (SELECT name FROM conveyor_users WHERE name = %(user)s FOR KEY SHARE) AS u
RETURNING id;

-- name: get_token
-- One token by its id (the one a presented token carries), revoked or not: the caller verifies the secret
-- and the revocation (in constant time). Its use is recorded in the same statement when the presented
-- secret's digest is the token's (a wrong secret records nothing; NULL: a read only), it was last recorded
-- more than `every` seconds ago and the token is not revoked (a revoked token is never used): one write
-- a minute per token at most; otherwise the UPDATE matches no row and writes nothing. Two requests at once: the second
-- waits for the first's row lock, then finds the use recorded (no second write). The SELECT reads the
-- snapshot from before the update, so the use just recorded comes from `touched`.
WITH touched AS (
    UPDATE conveyor_tokens SET last_used_at = %(now)s
    WHERE id = %(id)s AND revoked_at IS NULL AND digest = %(digest)s::text
      AND (last_used_at IS NULL OR last_used_at < %(now)s::float8 - %(every)s::float8)
    RETURNING last_used_at
)
SELECT id, user_name, label, digest, created_at, coalesce((SELECT last_used_at FROM touched), last_used_at),
       revoked_at
FROM conveyor_tokens WHERE id = %(id)s;

-- name: list_tokens
-- Every token (`user` NULL) or the user's, newest first; the id breaks ties.
SELECT {token_columns} FROM conveyor_tokens
WHERE %(user)s::text IS NULL OR user_name = %(user)s
ORDER BY created_at DESC, id;

-- name: revoke_token
-- Revoked now, kept for the record; no row changes if there is no such token or it is revoked already
-- (the store answers False).
UPDATE conveyor_tokens SET revoked_at = %(now)s WHERE id = %(id)s AND revoked_at IS NULL;

-- name: audit_lock
-- only in this dialect: SQLite's writers are serial, so its entries commit in seq order already.
-- The first statement of audit's transaction, held to its commit: entries are appended one at a time, so
-- they commit in the order of their seqs and a reader paging with `after` never passes an entry that
-- commits later with a smaller seq. Changes made through the API are few: no contention to speak of.
SELECT pg_advisory_xact_lock(1129270855, hashtext(current_schema()));

-- name: audit
-- One audit entry (data: JSON text), after audit_lock in its transaction; returns its seq.
INSERT INTO conveyor_audit (at, user_name, action, target, data)
VALUES (%(now)s, %(user)s, %(action)s, %(target)s, %(data)s::json)
RETURNING seq;

-- name: audit_log
-- Entries after `after` (everyone's, or `user`'s off conveyor_audit_user), oldest first, at most `limit`.
SELECT seq, at, user_name, action, target, data::text FROM conveyor_audit
WHERE seq > %(after)s AND (%(user)s::text IS NULL OR user_name = %(user)s)
ORDER BY seq
LIMIT %(limit)s;
