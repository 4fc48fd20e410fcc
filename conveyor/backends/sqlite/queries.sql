-- Every statement the SQLite store runs, by name (`-- name: NAME` starts a block; conveyor.backends.sql_files
-- reads them). Parameters are sqlite3's named `:name`, except `insert`'s positional `{insert_values}`.
-- Times are Unix seconds from the caller: no statement reads SQLite's clock.
-- Column lists are placeholders expanded from conveyor.backends.columns when the file is read:
-- `{job_columns}` (a whole job), `{insert_columns}` / `{insert_values}` (what an enqueue writes).
-- `{queues}` is expanded by the store when the statement runs: one parameter `:q0, :q1, ...` per
-- queue, so that a single queue is an equality SQLite answers straight from conveyor_jobs_claim.
-- A statement that exists only here says so (`-- only in this dialect: why`); every other name
-- exists in postgres/queries.sql too, for the same step (tests/conformance/test_sql_dialects.py).

-- connection and transactions ----------------------------------------------------------------------

-- name: journal_mode_wal
-- only in this dialect: readers never block the one writer, and the writer never blocks readers.
PRAGMA journal_mode = WAL;

-- name: synchronous_full
-- only in this dialect: producer commits (enqueue, cancel, requeue, prune, set-up) wait for the
-- fsync of the WAL, so an acknowledged enqueue survives power loss (PostgreSQL's enqueue pool).
PRAGMA synchronous = FULL;

-- name: synchronous_normal
-- only in this dialect: a worker's own bookkeeping (claim, lease, progress, outcome) and any store
-- opened with ?durable=false: the WAL is synced at checkpoints only. Losing the last such commits
-- to a power cut makes a job run again once its lease runs out, which at-least-once allows.
PRAGMA synchronous = NORMAL;

-- name: begin_write
-- only in this dialect: take SQLite's one write lock from the first statement, so a transaction
-- that reads then writes (a claim) cannot be overtaken between the two.
BEGIN IMMEDIATE;

-- name: begin
-- only in this dialect: a caller's connection in sqlite3's legacy mode, not yet in a transaction, gets
-- one before our savepoint (a savepoint released outside a transaction would commit at once).
BEGIN;

-- name: commit
-- only in this dialect: psycopg ends PostgreSQL's transactions itself.
COMMIT;

-- name: rollback
-- only in this dialect: psycopg ends PostgreSQL's transactions itself.
ROLLBACK;

-- name: savepoint
-- Inside a caller's transaction (transactional enqueue), and around a bulk insert that may hit a
-- taken id: undo our rows only.
SAVEPOINT conveyor_enqueue;

-- name: release_savepoint
RELEASE SAVEPOINT conveyor_enqueue;

-- name: rollback_to_savepoint
ROLLBACK TO SAVEPOINT conveyor_enqueue;

-- name: data_version
-- only in this dialect: changes whenever another connection commits to the file; an idle worker
-- watches it instead of sleeping out a poll (PostgreSQL LISTENs instead).
PRAGMA data_version;

-- name: database_file
-- only in this dialect: the file a caller's own connection has open, so a transactional enqueue
-- on a connection to another file is refused rather than written where no worker looks.
SELECT file FROM pragma_database_list WHERE name = 'main';

-- schema ---------------------------------------------------------------------------------------------

-- name: conveyor_tables
-- only in this dialect: which of conveyor's tables the file holds; a fresh file (or one of another
-- application, which conveyor may share) has none and gets every migration.
SELECT name FROM sqlite_master WHERE type = 'table' AND name IN ('conveyor_meta', 'conveyor_jobs');

-- name: schema_version
-- The latest migration applied (text, as schema 1 wrote it).
SELECT value FROM conveyor_meta WHERE name = 'schema_version';

-- name: record_migration
-- In the migration's own transaction, so a file is never left between two versions.
INSERT INTO conveyor_meta (name, value) VALUES ('schema_version', :version)
ON CONFLICT (name) DO UPDATE SET value = excluded.value;

-- producers ------------------------------------------------------------------------------------------

-- name: next_event_number
-- a fragment: the number the log gives its next event: its largest plus one, as SQLite numbers a row
-- itself (the end of the rowid tree; a head row keeps the largest when the newest events are deleted,
-- migrations/0010). Inside a write transaction nothing else moves it.
(SELECT coalesce(max(seq), 0) + 1 FROM conveyor_events)

-- name: next_event
-- only in this dialect: the log's next number, where an enqueue's batch rows begin (the jobs' marks).
SELECT {next_event_number};

-- name: event_mark
-- a fragment: a step whose event goes into a batch row (insert_event_batch) notes where that row is: the
-- lowest number it can have (migrations/0009). `SET {event_mark}`.
event_marks = event_marks || {next_event_number} || ' '

-- name: insert_plain
-- only in this dialect: sqlite3 binds every parameter of every row of an executemany, so a plain job
-- (columns.is_plain: a queued task call, no stages, owner or schedule) binds only the columns it sets
-- ({plain_insert_columns}); the rest take their defaults. A bulk enqueue then costs a third of what
-- binding all of {insert_columns} did (measured). PostgreSQL streams its batches by COPY.
INSERT INTO conveyor_jobs (status, {plain_insert_columns}, event_marks)
VALUES ('queued', {plain_insert_values}, ? || ' ');

-- name: insert
-- One job (executemany for a batch), its status from the row too: queued, or waiting for a pipeline
-- whose first stage waits. A taken id, or a key held by an unfinished job (conveyor_jobs_key), raises
-- IntegrityError: the store looks keys up first, in the same transaction. The last value is the first
-- number of the batch row its `enqueued` event goes into (store.py computes it): its event_marks.
INSERT INTO conveyor_jobs ({insert_columns}, event_marks) VALUES ({insert_values}, ? || ' ');

-- name: find_unfinished_by_key
-- The job holding a key, which an enqueue with that key returns instead of inserting.
SELECT {job_columns} FROM conveyor_jobs
WHERE key = :key AND status IN ('queued', 'running', 'waiting');

-- workers --------------------------------------------------------------------------------------------

-- name: next_due
-- When the next queued job of these queues falls due: one probe of conveyor_jobs_claim per queue and
-- priority (no scan of a backlog of scheduled jobs). Also the claim's cheap first look, outside the
-- write lock, so an idle poll never takes it. :queues and :priorities are JSON arrays.
-- The switches apply as in the claim (paused queues, disabled tasks, everything off): a worker whose
-- only due jobs are switched off then waits for a change instead of polling in a tight loop.
SELECT min((SELECT min(scheduled_at) FROM conveyor_jobs
            WHERE status = 'queued' AND queue = q.value AND priority = p.value
              AND (NOT EXISTS (SELECT 1 FROM conveyor_switches WHERE scope = 'task')
                   OR task NOT IN (SELECT name FROM conveyor_switches WHERE scope = 'task'))))
FROM json_each(:queues) AS q, json_each(:priorities) AS p
WHERE q.value NOT IN (SELECT name FROM conveyor_switches WHERE scope = 'queue')
  AND NOT EXISTS (SELECT 1 FROM conveyor_switches WHERE scope = 'all');

-- name: claim
-- The first :limit due jobs of these queues in claim order (priority, due time, insertion) become
-- RUNNING, each with a fresh fencing token and a lease until :until. SQLite's write lock is held,
-- so no other claim runs between choosing and taking; `status = 'queued'` is the fence regardless.
-- The switches are read in the same transaction: nothing of a paused queue or a disabled task, and
-- nothing at all while everything is off, is taken once set_switch has committed. The task test is
-- guarded by whether any task is disabled (computed once): otherwise it would read each candidate's
-- row, where the choice is now answered from conveyor_jobs_claim alone (it cost a claim half again).
-- Returns each job and its seq. Their `started` events go into one batch row (event_mark).
UPDATE conveyor_jobs
SET status = 'running', token = lower(hex(randomblob(12))), worker_id = :worker_id,
    attempts = attempts + 1, started_at = :now, finished_at = NULL, lease_expires_at = :until,
    progress = 0, progress_message = '', {event_mark}
WHERE status = 'queued' AND seq IN (
    SELECT seq FROM conveyor_jobs
    WHERE status = 'queued' AND queue IN ({queues}) AND scheduled_at <= :now
      AND queue NOT IN (SELECT name FROM conveyor_switches WHERE scope = 'queue')
      AND (NOT EXISTS (SELECT 1 FROM conveyor_switches WHERE scope = 'task')
           OR task NOT IN (SELECT name FROM conveyor_switches WHERE scope = 'task'))
      AND NOT EXISTS (SELECT 1 FROM conveyor_switches WHERE scope = 'all')
    ORDER BY priority DESC, scheduled_at, seq
    LIMIT :limit
)
RETURNING {job_columns}, seq;

-- name: start
-- Claim one given job, due or not (eager mode runs the job it has just enqueued); no row if it is
-- not queued (already claimed, cancelled, gone). The switches do not apply: the caller asked for it.
-- Returns the job and its seq, as claim.
UPDATE conveyor_jobs
SET status = 'running', token = lower(hex(randomblob(12))), worker_id = :worker_id,
    attempts = attempts + 1, started_at = :now, finished_at = NULL, lease_expires_at = :until,
    progress = 0, progress_message = '', {event_mark}
WHERE id = :id AND status = 'queued'
RETURNING {job_columns}, seq;

-- name: extend_leases
-- A worker's heartbeat: renew the runs it still holds; the tokens not returned are runs it lost
-- (cancelled, aborted, rescued). :tokens is a JSON array; only running jobs are read (the partial
-- index conveyor_jobs_lease holds just those), so the scan is as long as the runs in flight.
UPDATE conveyor_jobs SET lease_expires_at = :until
WHERE token IN (SELECT value FROM json_each(:tokens)) AND status = 'running' AND worker_id = :worker_id
RETURNING token;

-- name: extend_worker_leases
-- A supervisor renews every run of its live children from outside (a child whose task holds the GIL
-- cannot heartbeat). :worker_ids is a JSON array.
UPDATE conveyor_jobs SET lease_expires_at = :until
WHERE status = 'running' AND worker_id IN (SELECT value FROM json_each(:worker_ids));

-- name: progress
-- Fenced by the run's token: a stale run writes no progress, and so no `progress` event.
UPDATE conveyor_jobs SET progress = :percent, progress_message = :message
WHERE id = :id AND token = :token AND status = 'running';

-- name: emit
-- A running task's own event, fenced by its run's token (a stale run's matches no job: no row), with
-- the job's task, queue, attempt and worker copied from its row.
INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data, job_seq)
SELECT :now, :kind, id, task, queue, attempts, worker_id, :data, seq FROM conveyor_jobs
WHERE id = :id AND token = :token AND status = 'running';

-- Every finish_* writes one OutcomeKind for the current run only (id, token, running: the fence),
-- and with :lease_before only if the run's lease ran out before then (the leader's guard: a worker
-- that renewed its lease meanwhile keeps its job). A stale run matches no row and writes nothing.
-- The store appends the events of the reports actually written (row count 1) as batch rows
-- (insert_event_batch, with what the run's claim returned or else batch_event_jobs; no RETURNING: SQLite's
-- costs a few microseconds per statement, measured); each finish_* but the discard's, whose row goes,
-- notes where that row is ({event_mark}).

-- name: current_run
-- a fragment: the fence of every finish_* statement, written {current_run}: the run's job, by its id
-- and token, still running; with lease_before (the leader's rescue) only if its lease ran out before
-- that time, so a worker that renewed it keeps its job.
id = :id AND token = :token AND status = 'running'
  AND (:lease_before IS NULL OR lease_expires_at < :lease_before)

-- name: finish_succeeded
-- `results` gains this stage's result as JSON (json() keeps the encoded text's values and order).
UPDATE conveyor_jobs
SET status = 'succeeded', result = :result, results = json_insert(results, '$[#]', json(:result)),
    error = NULL, exit_code = 0, progress = 100, finished_at = :now, expires_at = :now + result_ttl,
    token = NULL, lease_expires_at = NULL, {event_mark}
WHERE {current_run};

-- name: finish_failed
UPDATE conveyor_jobs
SET status = 'failed', error = :error, exit_code = :exit_code, finished_at = :now,
    expires_at = :now + result_ttl, token = NULL, lease_expires_at = NULL, {event_mark}
WHERE {current_run};

-- name: finish_retry
-- Queued again at :retry_at with one retry used; the error stays readable until the next run ends.
UPDATE conveyor_jobs
SET status = 'queued', error = :error, exit_code = :exit_code, retries = retries + 1,
    scheduled_at = :retry_at, token = NULL, lease_expires_at = NULL, {event_mark}
WHERE {current_run};

-- name: finish_released
-- Handed back, no retry used: by a stopping worker (due again at once, in its old place in line), or
-- by one that cannot run it (an unknown task: due at :retry_at, with the reason in :error, so a user
-- sees why it waits; without one, an earlier run's error stays).
UPDATE conveyor_jobs
SET status = 'queued', token = NULL, lease_expires_at = NULL,
    scheduled_at = coalesce(:retry_at, scheduled_at), error = coalesce(:error, error), {event_mark}
WHERE {current_run};

-- name: finish_rescued
-- Its worker died (the lease ran out): queued again as it was, no retry used, one more rescue
-- counted so a job that kills every worker can be failed as poison.
UPDATE conveyor_jobs
SET status = 'queued', rescues = rescues + 1, token = NULL, lease_expires_at = NULL, {event_mark}
WHERE {current_run};

-- name: finish_discarded
-- Returns what its `discarded` event copies from the job, which is gone once the statement ends, and its
-- marks: its entries in batch rows are rewritten to name it by id (event_batches.named).
DELETE FROM conveyor_jobs
WHERE {current_run}
RETURNING seq, task, queue, attempts, worker_id, event_marks;

-- name: finish_advanced
-- A pipeline moves on (ADVANCED: :retried 0, :error NULL), or restarts at the stage conveyor.pipeline
-- chose (a RETRY with a record: :retried 1, the failure in :error). The row becomes the next stage's
-- (DESIGN.md, rule 2): its task, arguments, queue and time-out; queued (due at :scheduled_at) or
-- waiting (:status, with the timer's end or the message's name and time-out). The run's token and lease
-- go, its progress and the previous stage's inbox too. Fenced like every finish_*.
UPDATE conveyor_jobs
SET stage = :stage, task = :task, queue = :queue, args = :args, kwargs = :kwargs, timeout = :timeout,
    status = :status, scheduled_at = :scheduled_at, wait_until = :wait_until, waiting_for = :waiting_for,
    deadline = :deadline, results = :results, stage_log = :stage_log, inbox = NULL, progress = 0,
    progress_message = '', token = NULL, lease_expires_at = NULL, retries = retries + :retried,
    error = :error, exit_code = :exit_code, {event_mark}
WHERE {current_run};

-- name: record_stages
-- A pipeline's last outcome (SUCCEEDED or FAILED with a record), after its finish_* was written, in the
-- same transaction: the stage it ended at, and the results and stage log conveyor.pipeline kept.
UPDATE conveyor_jobs SET stage = :stage, results = :results, stage_log = :stage_log WHERE id = :id;

-- name: expired
-- For the leader: runs whose lease ran out (their worker died or stopped), or that ran past their
-- timeout + :margin (their worker failed to abort them). It decides each one's outcome in Python.
-- The lease condition is answered from conveyor_jobs_lease; overdue runs are among the running ones.
SELECT {job_columns} FROM conveyor_jobs
WHERE status = 'running'
  AND (lease_expires_at < :now OR (timeout IS NOT NULL AND started_at + timeout + :margin < :now))
ORDER BY lease_expires_at, seq
LIMIT :limit;

-- readers and control --------------------------------------------------------------------------------

-- name: get
SELECT {job_columns} FROM conveyor_jobs WHERE id = :id;

-- name: job_filters
-- a fragment: list_jobs' and list_owned_jobs' filters (conveyor.backends.rows.list_params); a NULL filter
-- matches everything. :search is plain text found in the args' or kwargs' JSON text (instr: no pattern,
-- case-sensitive), or the start of the id (the web's `q`); it scans, bounded by the LIMIT.
(:queue IS NULL OR queue = :queue)
  AND (:status IS NULL OR status = :status)
  AND (:task IS NULL OR task = :task)
  AND (:scheduled_by IS NULL OR scheduled_by = :scheduled_by)  -- every run of a schedule
  AND (:id_prefix IS NULL OR substr(id, 1, length(:id_prefix)) = :id_prefix)  -- `conveyor job 3f2a`
  AND (:search IS NULL OR substr(id, 1, length(:search)) = :search
       OR instr(args, :search) > 0 OR instr(kwargs, :search) > 0)
  AND (:due_before IS NULL OR scheduled_at <= :due_before)
  AND (:due_after IS NULL OR scheduled_at > :due_after)

-- name: list_jobs
-- Newest first, by insertion order. :owner NULL matches every job; the store runs list_owned_jobs when
-- it is set.
SELECT {job_columns} FROM conveyor_jobs
WHERE (:owner IS NULL OR owner = :owner) AND {job_filters}
ORDER BY seq DESC
LIMIT :limit OFFSET :offset;

-- name: list_owned_jobs
-- list_jobs of one owner's jobs (a web user without view-others lists only theirs), newest first: read
-- off conveyor_jobs_owner in seq order (its entries carry the rowid), so a user with few jobs among
-- millions costs a few reads. Its own statement because SQLite plans one before the parameters are bound:
-- list_jobs' `:owner IS NULL OR ...` could not use the index.
SELECT {job_columns} FROM conveyor_jobs
WHERE owner = :owner AND {job_filters}
ORDER BY seq DESC
LIMIT :limit OFFSET :offset;

-- name: counts
-- Jobs by queue and status, where a queued job not due at :now counts as scheduled.
SELECT queue, CASE WHEN status = 'queued' AND scheduled_at > :now THEN 'scheduled' ELSE status END AS shown,
       count(*)
FROM conveyor_jobs
GROUP BY queue, shown;

-- name: cancel
-- Unfinished jobs only; a running one loses its token, so its worker's next heartbeat drops it.
UPDATE conveyor_jobs
SET status = 'cancelled', exit_code = 130, finished_at = :now, expires_at = :now + result_ttl,
    token = NULL, lease_expires_at = NULL
WHERE id = :id AND status IN ('queued', 'running', 'waiting');

-- name: requeue
-- Failed or cancelled jobs only, due now. A key now held by another unfinished job raises
-- IntegrityError (conveyor_jobs_key), which the store reports as InvalidTransition.
UPDATE conveyor_jobs
SET status = 'queued', scheduled_at = :now, finished_at = NULL, expires_at = NULL, exit_code = NULL,
    result = NULL
WHERE id = :id AND status IN ('failed', 'cancelled');

-- name: reset
-- requeue(reset=True): the job starts over, as if new.
UPDATE conveyor_jobs
SET attempts = 0, retries = 0, rescues = 0, error = NULL, progress = 0, progress_message = '',
    started_at = NULL, worker_id = NULL, stage = 0, results = '[]'
WHERE id = :id;

-- name: reset_to_stage
-- requeue(reset=True, first=...): a finished pipeline job, succeeded included, starts over at its first
-- stage, whose columns conveyor.pipeline computed (queued, or waiting for a first stage that waits),
-- as if new: what requeue and reset clear, and the previous run's stage log and inbox. A key now held
-- by another unfinished job raises IntegrityError (conveyor_jobs_key), as in requeue.
UPDATE conveyor_jobs
SET stage = :stage, task = :task, queue = :queue, args = :args, kwargs = :kwargs, timeout = :timeout,
    status = :status, scheduled_at = :scheduled_at, wait_until = :wait_until, waiting_for = :waiting_for,
    deadline = :deadline, results = '[]', stage_log = '[]', inbox = NULL, result = NULL, error = NULL,
    exit_code = NULL, finished_at = NULL, expires_at = NULL, attempts = 0, retries = 0, rescues = 0,
    progress = 0, progress_message = '', started_at = NULL, worker_id = NULL, token = NULL,
    lease_expires_at = NULL
WHERE id = :id AND status IN ('succeeded', 'failed', 'cancelled');

-- waits and the mailbox --------------------------------------------------------------------------------

-- name: message_target
-- send_message's first look, under the write lock (so nothing changes before it stores): whether the job
-- exists, has finished, or waits on a message of some name, and at which stage.
SELECT status, waiting_for, stage FROM conveyor_jobs WHERE id = :id;

-- name: message_exists
-- A finished job's mailbox may still hold this message id: a sender's retry of a message that resumed
-- the job, which has finished since, is a duplicate, not "finished".
SELECT 1 FROM conveyor_messages WHERE job_id = :job_id AND id = :id;

-- name: insert_message
-- A message for the job's mailbox, not yet taken. A message id the job already has changes no row (the
-- primary key), which the store reports as a duplicate; concurrent sends of one id never raise.
INSERT INTO conveyor_messages (job_id, id, name, payload, at) VALUES (:job_id, :id, :name, :payload, :now)
ON CONFLICT (job_id, id) DO NOTHING;

-- name: take_message
-- A Message stage takes the job's oldest unconsumed message of its name (conveyor_messages_waiting, in
-- order of `at` then insertion), marked with the time and the stage; no row if the mailbox has none.
-- In the transaction that made the job wait on it (finish_advanced, requeue), or that stored it.
UPDATE conveyor_messages SET consumed_at = :now, stage = :stage
WHERE rowid = (SELECT rowid FROM conveyor_messages
               WHERE job_id = :job_id AND name = :name AND consumed_at IS NULL
               ORDER BY at, rowid LIMIT 1)
RETURNING id, payload;

-- name: resume_with_message
-- The waiting job, its message taken, is queued due now with the message as its stage's inbox
-- ({"id", "payload"}; json() keeps the payload's JSON text as it is). waiting_for stays: the worker that
-- claims it sees which Message stage it is at.
UPDATE conveyor_jobs
SET status = 'queued', scheduled_at = :now, wait_until = NULL,
    inbox = json_object('id', :message_id, 'payload', json(:payload))
WHERE id = :id AND status = 'waiting';

-- name: messages
-- A job's mailbox, oldest first (then in insertion order): waiting messages and consumed ones.
SELECT job_id, id, name, payload, at, consumed_at, stage FROM conveyor_messages
WHERE job_id = :job_id
ORDER BY at, rowid;

-- name: delete_job_messages
-- only in this dialect: PostgreSQL deletes them in prune's and finish_discarded's own statements (a
-- data-modifying CTE); here the store runs this after them, in the same transaction.
-- The mailboxes of jobs that are gone (prune, a discard), in the transaction that deleted them, and of a
-- job reset to start over. :ids is a JSON array; each is found by the primary key's first column.
DELETE FROM conveyor_messages WHERE job_id IN (SELECT value FROM json_each(:ids));

-- name: release_waits
-- The leader: up to :limit waiting jobs whose timer (or message time-out) ended, or whose pipeline's
-- budget ran out, are queued due now at the same stage; the worker that claims one decides what comes
-- next. The earliest ended first; found by a range of each partial index (conveyor_jobs_wait,
-- conveyor_jobs_deadline), no scan of the jobs. wait_until stays, so that worker sees the wait ended.
-- Returns what each one's `resumed` event says.
UPDATE conveyor_jobs SET status = 'queued', scheduled_at = :now
WHERE status = 'waiting' AND seq IN (
    SELECT seq FROM (SELECT seq, wait_until AS ended FROM conveyor_jobs WHERE status = 'waiting' AND wait_until <= :now
                     UNION ALL
                     SELECT seq, deadline FROM conveyor_jobs WHERE status = 'waiting' AND deadline <= :now)
    GROUP BY seq
    ORDER BY min(ended), seq
    LIMIT :limit
)
RETURNING id, stage, CASE WHEN deadline <= :now THEN 'deadline' ELSE 'timer' END;

-- notifications -----------------------------------------------------------------------------------------

-- name: insert_notification
-- The owner's note, written by the outcome that finishes a job with notify, in its transaction (so a
-- stale run writes none). :data is JSON text.
INSERT INTO conveyor_notifications (owner, job_id, at, status, exit_code, data)
VALUES (:owner, :job_id, :now, :status, :exit_code, :data);

-- name: notifications
-- The newest :limit notes, of :owner (NULL: everyone's), only unread ones if :unread. Two branches, of
-- which the constant :owner test leaves one: everyone's, newest first by id; or one owner's, read
-- newest first from conveyor_notifications_owner (`:owner IS NULL OR owner = :owner` scanned every note).
SELECT id, owner, job_id, at, status, exit_code, data, read FROM conveyor_notifications
WHERE :owner IS NULL AND (NOT :unread OR read = 0)
UNION ALL
SELECT id, owner, job_id, at, status, exit_code, data, read FROM conveyor_notifications
WHERE owner = :owner AND (NOT :unread OR read = 0)
ORDER BY id DESC
LIMIT :limit;

-- name: mark_read
-- Only the owner's own notes, and only those still unread (the count is of those changed): these :ids
-- (a JSON array; others' ids are ignored) or, with NULL, all of them.
UPDATE conveyor_notifications SET read = 1
WHERE owner = :owner AND read = 0 AND (:ids IS NULL OR id IN (SELECT value FROM json_each(:ids)));

-- name: prune_notifications
-- Notes older than :before, by age only (they outlive their jobs). A scan: notes are few, one per
-- finished job that asked for one, and the leader prunes them seldom.
DELETE FROM conveyor_notifications WHERE at < :before;

-- locks ------------------------------------------------------------------------------------------------

-- name: acquire_lock
-- Take a free or expired lock, or renew our own; no row changes while another owner holds it.
INSERT INTO conveyor_locks (name, owner, expires_at) VALUES (:name, :owner, :until)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE conveyor_locks.owner = excluded.owner OR conveyor_locks.expires_at < :now;

-- name: release_lock
DELETE FROM conveyor_locks WHERE name = :name AND owner = :owner;

-- name: lock_owner
-- Who holds the lock unexpired (acquire_lock lets another owner take it once expires_at < now).
SELECT owner FROM conveyor_locks WHERE name = :name AND expires_at >= :now;

-- events ------------------------------------------------------------------------------------------------

-- name: insert_event
-- only in this dialect: PostgreSQL writes each event inside its change's statement (a data-modifying
-- CTE: one round trip); here the store appends them in the same transaction.
-- Event rows, in the transaction of the change they describe. Positional: conveyor.backends.rows.
-- EVENT_COLUMNS, then the job's seq (NULL for none). The store repeats the VALUES row for a batch
-- (a claim's, an enqueue's events, up to 100 a statement): one statement for many rows cost a third
-- less than an executemany of one row each (measured).
INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data, job_seq)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?);

-- name: copy_job_events
-- only in this dialect: PostgreSQL writes the event in its change's statement (a data-modifying CTE).
-- Jobs' events whose task, queue, attempt and worker are copied from their rows as they are now,
-- after the change (finish, progress, cancel, requeue): one statement for a batch of outcomes.
-- :events is a JSON array of [job id, kind, data text], written in that order.
INSERT INTO conveyor_events (at, kind, job_id, task, queue, attempt, worker_id, data, job_seq)
SELECT :now, e.value ->> 1, j.id, j.task, j.queue, j.attempts, j.worker_id, e.value ->> 2, j.seq
FROM json_each(:events) AS e JOIN conveyor_jobs AS j ON j.id = e.value ->> 0
ORDER BY e.key;

-- name: insert_event_batch
-- only in this dialect: PostgreSQL writes one row per event inside its change's statement.
-- Up to 100 events of one hot-path step (an enqueue's, a claim's, a batch of outcomes': docs/events.md
-- "How SQLite stores events") as one row: :n events numbered from the log's next number, the row's seq
-- the last of them; :entries names each event's job by its seq (conveyor.backends.event_batches), :kind
-- and :worker_id are most events'. A few bytes an event instead of a row each with an index entry: the
-- bytes a commit writes are the log's cost (measured, issue 10; benchmarks/README.md).
INSERT INTO conveyor_events (seq, at, kind, worker_id, data, n)
VALUES ({next_event_number} - 1 + :n, :now, :kind, :worker_id, :entries, :n);

-- name: batch_event_jobs
-- only in this dialect: PostgreSQL copies a batch of outcomes' events from its rows in their statement.
-- What a batch of outcomes' events takes from their jobs' rows as they are now, after the change: seq,
-- task, queue, attempt, worker. :ids is a JSON array of job ids.
SELECT j.id, j.seq, j.task, j.queue, j.attempts, j.worker_id
FROM json_each(:ids) AS e JOIN conveyor_jobs AS j ON j.id = e.value;

-- name: event_jobs
-- The jobs batch rows name by seq (event_batches.read resolves them): id and marks.
SELECT seq, id, event_marks FROM conveyor_jobs WHERE seq IN (SELECT value FROM json_each(:seqs));

-- name: last_insert_seq
-- only in this dialect: the seq of the last job this connection inserted. A batch inserted in one
-- executemany under the write lock takes consecutive seqs (SQLite gives a new row the largest rowid + 1),
-- so its first job's seq is this minus the batch's length, plus one: what its events' entries name.
SELECT last_insert_rowid();

-- name: events
-- The log's rows after :after in seq order (seq order is commit order: writers are serial). A NULL
-- filter matches everything; :kinds is a JSON array of kinds, any of which matches. A batch row (n set)
-- is filtered once its events are read out (event_batches); here only by the id of a job that is gone,
-- whose entries are the ones that name it by id (a discarded job's) and so hold it in the row's text. A
-- row whose seq is past :after can hold events up to n - 1 before it: the reader drops those.
SELECT seq, at, kind, job_id, task, queue, attempt, worker_id, data, n FROM conveyor_events
WHERE seq > :after
  AND CASE WHEN n IS NOT NULL THEN :job_id IS NULL OR instr(data, :job_id) > 0
      ELSE (:job_id IS NULL OR job_id = :job_id)  -- a job that is gone (discarded): a walk of the log
           AND (:task IS NULL OR task = :task)
           AND (:queue IS NULL OR queue = :queue)
           AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds))) END
ORDER BY seq
LIMIT :limit;

-- name: job_events
-- SQLite's events are indexed by the job's seq (conveyor_events_job), not its id (PostgreSQL's by id).
-- `events` for one job that still exists, by its seq (:job_seq), not by a walk of the whole log; job_id
-- is checked too, as a seq can have been another job's (the newest job was deleted, its seq given again).
SELECT seq, at, kind, job_id, task, queue, attempt, worker_id, data, n FROM conveyor_events
WHERE job_seq = :job_seq AND job_id = :job_id AND seq > :after
  AND (:task IS NULL OR task = :task)
  AND (:queue IS NULL OR queue = :queue)
  AND (:kinds IS NULL OR kind IN (SELECT value FROM json_each(:kinds)))
ORDER BY seq
LIMIT :limit;

-- name: event_batches_from
-- only in this dialect: the batch rows from one of a job's marks on, in order (event_batches.marked_rows
-- reads until the first that names the job: a row or two, written in the transaction of the mark); the
-- bound (:span) only ends the walk for a mark whose row is gone (pruned by age).
SELECT seq, at, kind, job_id, task, queue, attempt, worker_id, data, n FROM conveyor_events
WHERE seq >= :mark AND seq < :mark + :span AND n IS NOT NULL ORDER BY seq;

-- name: update_event_batch
-- only in this dialect: a batch row whose entries of a discarded job now name it by id (event_batches.named).
UPDATE conveyor_events SET data = :entries WHERE seq = :seq;

-- name: last_event_seq
-- only in this dialect: PostgreSQL reads the sequencer's head (conveyor_event_head) instead.
-- Where a subscriber that wants only new events starts (0 for an empty log); the end of the rowid tree.
SELECT coalesce(max(seq), 0) FROM conveyor_events;

-- name: prune_events
-- Events older than the App's event_ttl. The log is in time order, so they are its oldest: the prefix
-- before the first event at or after :before, found by a walk in seq order that stops there (no index on
-- `at`, migrations/0003). An event written with an older time after a newer one (clocks of two
-- processes a little apart) goes with a later prune. Their numbers are never reused: the store keeps the
-- head (event_writes.keeping_head).
-- Returns how many events each deleted row held (a batch row's entries, of jobs still there or not).
DELETE FROM conveyor_events
WHERE seq < coalesce((SELECT seq FROM conveyor_events WHERE at >= :before ORDER BY seq LIMIT 1),
                     (SELECT max(seq) + 1 FROM conveyor_events))
  AND at < :before
RETURNING coalesce(n, 1);

-- name: delete_job_events
-- only in this dialect: prune's second statement, for the jobs its DELETE returned (:seqs and :ids, JSON
-- arrays); PostgreSQL deletes them in prune's own statement (a data-modifying CTE). Found by job_seq
-- (conveyor_events_job); the id check keeps the events of an older job that had the same seq.
DELETE FROM conveyor_events
WHERE job_seq IN (SELECT value FROM json_each(:seqs)) AND job_id IN (SELECT value FROM json_each(:ids));

-- name: event_head
-- only in this dialect: the log's newest row, read before events are deleted (event_writes.keeping_head).
SELECT seq, at FROM conveyor_events ORDER BY seq DESC LIMIT 1;

-- name: keep_event_head
-- only in this dialect: PostgreSQL's sequencer never goes back. After a deletion that took the newest
-- events (:seq was the newest), a head row in their place: a batch row of no events (n = 0, read as none)
-- at the deleted row's time, so that the next number is still past every number given (migrations/0010).
INSERT INTO conveyor_events (seq, at, kind, data, n)
SELECT :seq, :at, 'head', '{"t":[],"a":0,"e":[]}', 0
WHERE :seq > (SELECT coalesce(max(seq), 0) FROM conveyor_events);

-- name: job_seq
-- only in this dialect: a job's seq, by which its single events are indexed (job_events), and where its
-- batch rows are (event_marks, event_batches_from).
SELECT seq, event_marks FROM conveyor_jobs WHERE id = :id;

-- switches ----------------------------------------------------------------------------------------------

-- name: switch_off
-- No row changes if it is already off: the store then writes no event.
INSERT INTO conveyor_switches (scope, name, since) VALUES (:scope, :name, :now)
ON CONFLICT (scope, name) DO NOTHING;

-- name: switch_on
DELETE FROM conveyor_switches WHERE scope = :scope AND name = :name;

-- name: switches
SELECT scope, name FROM conveyor_switches;

-- worker registry ---------------------------------------------------------------------------------------

-- name: register_worker
-- A worker's row at its start, or again when its row was pruned while it was cut off.
INSERT INTO conveyor_workers (id, host, pid, queues, concurrency, version, started_at, last_seen, in_flight,
                              state, stop_requested, leader)
VALUES (:id, :host, :pid, :queues, :concurrency, :version, :started_at, :now, :in_flight, :state,
        :stop_requested, :leader)
ON CONFLICT (id) DO UPDATE SET
    host = excluded.host, pid = excluded.pid, queues = excluded.queues, concurrency = excluded.concurrency,
    version = excluded.version, started_at = excluded.started_at, last_seen = excluded.last_seen,
    in_flight = excluded.in_flight, state = excluded.state, stop_requested = excluded.stop_requested,
    leader = excluded.leader;

-- name: beat_worker
-- The worker's heartbeat; returns whether a stop was asked for it (no row: it was pruned, it registers again).
UPDATE conveyor_workers SET last_seen = :now, in_flight = :in_flight, state = :state, leader = :leader
WHERE id = :id
RETURNING stop_requested;

-- name: end_worker
-- A clean exit.
UPDATE conveyor_workers SET state = 'stopped', last_seen = :now, in_flight = 0, leader = 0
WHERE id = :id;

-- name: list_workers
-- Newest first.
SELECT id, host, pid, queues, concurrency, version, started_at, last_seen, in_flight, state, stop_requested,
       leader
FROM conveyor_workers
ORDER BY started_at DESC, id;

-- name: request_worker_stop
-- stop_workers: the worker reads the flag back at its next heartbeat. Workers that already ended are
-- not asked. :ids is a JSON array.
UPDATE conveyor_workers SET stop_requested = 1
WHERE id IN (SELECT value FROM json_each(:ids)) AND state IN ('running', 'stopping')
RETURNING id;

-- name: mark_dead_workers
-- The leader: a worker whose heartbeat is older than :seen_before died (its runs are rescued by their
-- leases running out, not here).
UPDATE conveyor_workers SET state = 'dead', leader = 0
WHERE state IN ('running', 'stopping') AND last_seen < :seen_before
RETURNING id;

-- name: prune_workers
DELETE FROM conveyor_workers WHERE state IN ('stopped', 'dead') AND last_seen < :before;

-- admin -----------------------------------------------------------------------------------------------

-- name: prune_expired
-- Finished jobs past their expiry (conveyor_jobs_expiry); their seqs and ids, whose events go too
-- (delete_job_events, in the same transaction).
DELETE FROM conveyor_jobs WHERE expires_at <= :now AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING seq, id;

-- name: prune_before
DELETE FROM conveyor_jobs WHERE finished_at < :before AND status IN ('succeeded', 'failed', 'cancelled')
RETURNING seq, id;

-- name: oldest_due
-- Per queue, when its oldest due queued job fell due (health, `conveyor queues`); switches not
-- considered. The queues are found by a skip scan of conveyor_jobs_claim (one probe per queue), then
-- one probe per (queue, priority), as next_due: no scan of a long backlog. :priorities: a JSON array.
WITH RECURSIVE queues (queue) AS (
    SELECT (SELECT queue FROM conveyor_jobs WHERE status = 'queued' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT j.queue FROM conveyor_jobs AS j WHERE j.status = 'queued' AND j.queue > q.queue
            ORDER BY j.queue LIMIT 1)
    FROM queues AS q WHERE q.queue IS NOT NULL
)
SELECT q.queue, min((SELECT min(scheduled_at) FROM conveyor_jobs
                     WHERE status = 'queued' AND queue = q.queue AND priority = p.value)) AS due
FROM queues AS q, json_each(:priorities) AS p
WHERE q.queue IS NOT NULL
GROUP BY q.queue
HAVING due <= :now;

-- name: destroy_all
-- Run in one transaction: every job, lock, event, switch, worker, message, notification, schedule, tick
-- record, service, user, token and audit entry. sqlite_sequence keeps the notification and audit numbers'
-- high marks and the store the event log's head (event_writes.keeping_head), so none is given out again.
DELETE FROM conveyor_audit;
DELETE FROM conveyor_tokens;
DELETE FROM conveyor_users;
DELETE FROM conveyor_services;
DELETE FROM conveyor_schedules;
DELETE FROM conveyor_schedule_ticks;
DELETE FROM conveyor_jobs;
DELETE FROM conveyor_messages;
DELETE FROM conveyor_notifications;
DELETE FROM conveyor_locks;
DELETE FROM conveyor_events;
DELETE FROM conveyor_switches;
DELETE FROM conveyor_workers;

-- schedules ---------------------------------------------------------------------------------------------
-- conveyor/backends/sqlite/schedules.py runs these. What to fire is decided in Python (conveyor.scheduling);
-- fire writes it in one producer (synced) transaction: advance_schedule, record_ticks, the jobs (insert, as
-- enqueue), fired, trim_ticks, and the events (insert_event).

-- name: schedule_columns
-- a fragment: a schedule's columns, in the order of conveyor.backends.rows.SCHEDULE_COLUMNS (row_to_schedule).
name, cron, tz, every, anchor, target, missed, catch_up, grace, overlap, jitter, paused, source, next_at,
last_tick_at, last_job_id, paused_at, created_at, updated_at, owner

-- name: put_schedule
-- A new schedule, or the new spec, target, policies, next_at, source and owner of the one of that name
-- (the owner is replaced like the spec: a put says whose the schedule is): its tick history, last tick
-- and job, created_at, and whether (and since when) it is paused stay as they were (a worker's sync must
-- not resume what a user paused). An unchanged spec (cron, tz, every, anchor) keeps next_at too: two
-- workers syncing a new code schedule at once must not move back, or skip, a tick the first one's
-- scheduler already fired or planned. The store reads get_schedule first, under the same write lock, to
-- tell a new one (its `schedule_put` event says which).
INSERT INTO conveyor_schedules (name, cron, tz, every, anchor, target, missed, catch_up, grace, overlap, jitter,
                                paused, source, owner, next_at, paused_at, created_at, updated_at)
VALUES (:name, :cron, :tz, :every, :anchor, :target, :missed, :catch_up, :grace, :overlap, :jitter, :paused,
        :source, :owner, :next_at, :paused_at, :now, :now)
ON CONFLICT (name) DO UPDATE SET
    cron = excluded.cron, tz = excluded.tz, every = excluded.every, anchor = excluded.anchor,
    target = excluded.target, missed = excluded.missed, catch_up = excluded.catch_up, grace = excluded.grace,
    overlap = excluded.overlap, jitter = excluded.jitter, source = excluded.source, owner = excluded.owner,
    next_at = CASE
        WHEN cron IS excluded.cron AND tz IS excluded.tz AND every IS excluded.every AND anchor IS excluded.anchor
        THEN next_at ELSE excluded.next_at
    END,
    updated_at = excluded.updated_at;

-- name: get_schedule
SELECT {schedule_columns} FROM conveyor_schedules WHERE name = :name;

-- name: list_schedules
-- By name (the primary key's order: no sort).
SELECT {schedule_columns} FROM conveyor_schedules ORDER BY name;

-- name: remove_schedule
-- The schedule; its tick records go too (delete_schedule_ticks), in the same transaction. Its jobs stay:
-- they are jobs like any other, pruned when they expire.
DELETE FROM conveyor_schedules WHERE name = :name;

-- name: delete_schedule_ticks
-- only in this dialect: PostgreSQL deletes them in remove_schedule's and retire_schedules' own statements (a
-- data-modifying CTE); here the store runs this after them, in the same transaction.
-- The tick records of schedules just deleted (:names, a JSON array), each a range of the primary key.
DELETE FROM conveyor_schedule_ticks WHERE schedule IN (SELECT value FROM json_each(:names));

-- name: retire_schedules
-- A worker's sync: schedules declared in code (source 'code') that its code declares no more (not in
-- :keep, a JSON array) are deleted, their tick records after them (delete_schedule_ticks). Stored ones
-- (app.schedule at run time) are never retired. Returns their names.
DELETE FROM conveyor_schedules
WHERE source = 'code' AND name NOT IN (SELECT value FROM json_each(:keep))
RETURNING name;

-- name: pause_schedule
-- Pause (:paused 1: since :now) or resume (:paused 0: next_at becomes :next_at, the caller's first tick
-- after now, so no burst of the ticks skipped meanwhile). No row changes if it already is so: no event.
UPDATE conveyor_schedules
SET paused = :paused, paused_at = CASE WHEN :paused THEN :now END,
    next_at = CASE WHEN :paused THEN next_at ELSE coalesce(:next_at, next_at) END, updated_at = :now
WHERE name = :name AND paused <> :paused;

-- name: due_schedules
-- The schedules not paused whose next tick has come, the most overdue first, read in order straight off
-- conveyor_schedules_due (partial: paused = 0, as this condition says); no scan, no sort.
SELECT {schedule_columns} FROM conveyor_schedules
WHERE paused = 0 AND next_at <= :now
ORDER BY next_at, name
LIMIT :limit;

-- name: advance_schedule
-- fire's compare-and-set, its first statement: next_at moves only if it still is :expected, the value the
-- caller planned from. No row: another scheduler fired these ticks first (or the schedule is gone), and
-- the store writes nothing else. SQLite's write lock makes the test and the write one step. A paused
-- schedule fires nothing: a pass that read it before pause_schedule committed writes nothing after.
UPDATE conveyor_schedules SET next_at = :next_at WHERE name = :name AND next_at = :expected AND NOT paused;

-- name: record_ticks
-- One tick's record (one execution per tick: a local call costs no round trip): its outcome, the job it
-- enqueues (NULL for none), :data JSON text. A tick already recorded changes no row (the primary key):
-- the store then enqueues nothing for it, whatever the compare-and-set said.
INSERT INTO conveyor_schedule_ticks (schedule, tick_at, outcome, job_id, at, data)
VALUES (:name, :tick_at, :outcome, :job_id, :now, :data)
ON CONFLICT (schedule, tick_at) DO NOTHING;

-- name: set_tick_job
-- A tick whose job's key was held by an unfinished job (enqueue returned that job instead of inserting
-- one): its record names the job that holds the key.
UPDATE conveyor_schedule_ticks SET job_id = :job_id WHERE schedule = :name AND tick_at = :tick_at;

-- name: fired
-- After a fire's ticks were recorded and their jobs enqueued, in its transaction: the last tick that
-- enqueued a job, and that job (the `conveyor schedules` listing, the overlap test's previous job).
UPDATE conveyor_schedules SET last_tick_at = :last_tick_at, last_job_id = :last_job_id WHERE name = :name;

-- name: trim_ticks
-- The audit trail is bounded: a fire keeps the newest :keep tick records of its schedule and deletes the
-- older ones, all found in one range of the primary key (a one-second schedule records 86,400 a day).
DELETE FROM conveyor_schedule_ticks
WHERE schedule = :name
  AND tick_at <= (SELECT tick_at FROM conveyor_schedule_ticks WHERE schedule = :name
                  ORDER BY tick_at DESC LIMIT 1 OFFSET :keep);

-- name: schedule_ticks
-- A schedule's newest :limit tick records, newest first: a range of the primary key read backwards.
SELECT schedule, tick_at, outcome, job_id, at, data FROM conveyor_schedule_ticks
WHERE schedule = :name
ORDER BY tick_at DESC
LIMIT :limit;

-- services ----------------------------------------------------------------------------------------------
-- conveyor/backends/sqlite/services.py runs these: one row per replica of a service instance
-- (migrations/0006_services.sql). How a run ends is decided in Python (conveyor.service_policy); the store
-- writes it, fenced by the run's token. Each step's events are appended (insert_event) in its transaction.
-- 'starting', 'running' and 'stopping' are the held statuses (conveyor.service_types.HELD): a worker
-- holds the row with a token and a lease. Tens of rows: every step reads the primary key or scans them.

-- name: service_columns
-- a fragment: a replica's columns, in the order of conveyor.backends.service_rows.SERVICE_COLUMNS (row_to_service).
name, replica, service, queue, params, source, local_to, wanted, generation, status, worker_id, token,
lease_until, run_generation, started_at, free_since, not_before, restarts, crashes, last_error, created_at,
updated_at, owner

-- name: create_service
-- An instance's :replicas rows (0 .. :replicas - 1, counted by the recursive CTE), PENDING and free since
-- now (claim_services' spreading waits on it), or STOPPED if not :wanted; :params JSON text; :owner on
-- every row. Nothing is inserted if an instance of that name exists (no row: the store answers False,
-- writes no event). The statement starts with INSERT, not WITH, so that Python's sqlite3 reports its
-- rowcount.
INSERT INTO conveyor_services (name, replica, service, queue, params, source, local_to, wanted, status,
                               free_since, created_at, updated_at, owner)
WITH RECURSIVE replicas (replica) AS (
    SELECT 0 UNION ALL SELECT replica + 1 FROM replicas WHERE replica + 1 < :replicas
)
SELECT :name, replica, :service, :queue, :params, :source, :local_to, :wanted,
       CASE WHEN :wanted THEN 'pending' ELSE 'stopped' END, :now, :now, :now, :owner
FROM replicas
WHERE NOT EXISTS (SELECT 1 FROM conveyor_services WHERE name = :name);

-- name: set_service_queue
-- resize_service's first step: the instance's queue, on every row (no row changes if it is that already:
-- the store counts the rows changed by this and the next two to tell whether anything did).
UPDATE conveyor_services SET queue = :queue, updated_at = :now WHERE name = :name AND queue <> :queue;

-- name: add_service_replicas
-- resize_service growing an instance: the replicas from the first missing one (replicas are numbered
-- 0 .. n - 1 without gaps) up to :replicas - 1, copying replica 0's service, params, source, local_to,
-- wanted, generation and owner; PENDING (free since now) or STOPPED as replica 0 is wanted or not. No
-- instance: no replica 0, no row. The statement starts with INSERT, not WITH, so that Python's sqlite3
-- reports its rowcount.
INSERT INTO conveyor_services (name, replica, service, queue, params, source, local_to, wanted, generation,
                               status, free_since, created_at, updated_at, owner)
WITH RECURSIVE replicas (replica) AS (
    SELECT max(replica) + 1 FROM conveyor_services WHERE name = :name
    UNION ALL SELECT replica + 1 FROM replicas WHERE replica + 1 < :replicas
)
SELECT s.name, r.replica, s.service, :queue, s.params, s.source, s.local_to, s.wanted, s.generation,
       CASE WHEN s.wanted THEN 'pending' ELSE 'stopped' END, :now, :now, :now, s.owner
FROM replicas AS r JOIN conveyor_services AS s ON s.name = :name AND s.replica = 0
WHERE r.replica < :replicas;

-- name: drop_service_replicas
-- resize_service shrinking an instance: the rows from :replicas up go, held or not. Their holders find
-- their tokens gone at their next renewal (renew_services) and stop.
DELETE FROM conveyor_services WHERE name = :name AND replica >= :replicas;

-- name: service_of
-- only in this dialect: PostgreSQL's log_service_resized reads it in its INSERT. After a resize that changed
-- rows: the service its `service_resized` event names (replica 0's, there while the instance is).
SELECT service FROM conveyor_services WHERE name = :name AND replica = 0;

-- name: control_service
-- A user's start, stop, restart or reload (:action, a ServiceAction value) of every replica, in one
-- statement (each expression reads the row as it was). start: wanted; a STOPPED or FAILED row is PENDING
-- again, due now, free since now, its crashes and error forgotten; a PENDING one waiting out a crash's
-- back-off is due now, its crashes and error forgotten (the user asked for it to run). stop: not
-- wanted; PENDING -> STOPPED, held -> STOPPING (its holder stops it and ends the run; STOPPED and FAILED
-- stay so). restart and reload:
-- wanted, generation + 1; held -> STOPPING (its holder ends the run PENDING and a worker takes the new
-- generation), STOPPED and FAILED -> PENDING as for start. reload: :params (JSON text) replaces the
-- stored ones when given. A start on a row STOPPING because of a stop (wanted 0) is a restart: wanted 1,
-- generation + 1, so its holder stops the old run (if it had not seen the stop yet) and a worker takes
-- the new generation; end_service_run writes PENDING for a run that ended STOPPED meanwhile, as the row
-- is wanted again. The store then reads the rows back (list_services).
UPDATE conveyor_services
SET wanted = CASE WHEN :action = 'stop' THEN 0 ELSE 1 END,
    generation = generation + CASE
        WHEN :action IN ('restart', 'reload') THEN 1
        WHEN :action = 'start' AND status = 'stopping' AND wanted = 0 THEN 1
        ELSE 0
    END,
    params = CASE WHEN :action = 'reload' THEN coalesce(:params, params) ELSE params END,
    status = CASE
        WHEN :action = 'stop' AND status = 'pending' THEN 'stopped'
        WHEN :action = 'stop' AND status IN ('starting', 'running', 'stopping') THEN 'stopping'
        WHEN :action = 'stop' THEN status
        WHEN status IN ('stopped', 'failed') THEN 'pending'
        WHEN :action IN ('restart', 'reload') AND status IN ('starting', 'running', 'stopping') THEN 'stopping'
        ELSE status
    END,
    not_before = CASE WHEN :action <> 'stop' AND status IN ('pending', 'stopped', 'failed') THEN :now
                      ELSE not_before END,
    free_since = CASE WHEN :action <> 'stop' AND status IN ('stopped', 'failed') THEN :now ELSE free_since END,
    crashes = CASE WHEN :action <> 'stop' AND status IN ('pending', 'stopped', 'failed') THEN '[]' ELSE crashes END,
    last_error = CASE WHEN :action <> 'stop' AND status IN ('pending', 'stopped', 'failed') THEN NULL
                      ELSE last_error END,
    updated_at = :now
WHERE name = :name;

-- name: remove_service
-- Every row of the instance, held or not (holders find their tokens gone at their next renewal and stop);
-- what its service_removed event names. No row: no such instance.
DELETE FROM conveyor_services WHERE name = :name RETURNING service, queue;

-- name: list_services
-- Every replica (:name NULL) or the instance :name's, by name and replica (the primary key's order).
SELECT {service_columns} FROM conveyor_services
WHERE :name IS NULL OR name = :name
ORDER BY name, replica;

-- name: services_due
-- only in this dialect: claim_services' cheap first look, outside the write lock (an idle keeper's pass
-- must not take it): 1 if a row of :services (JSON array) may be claimed by :worker_id now, or a row not
-- wanted has a lease run out (stop_expired_services). Spreading is left to the claim itself.
SELECT EXISTS (
    SELECT 1 FROM conveyor_services
    WHERE (status IN ('starting', 'running', 'stopping') AND lease_until < :now
           AND (wanted = 0 OR (service IN (SELECT value FROM json_each(:services))
                               AND (local_to IS NULL OR local_to = :worker_id))))
       OR (status = 'pending' AND wanted = 1 AND not_before <= :now
           AND service IN (SELECT value FROM json_each(:services)) AND (local_to IS NULL OR local_to = :worker_id))
);

-- name: stop_expired_services
-- claim_services' first step: a replica asked to stop (not wanted) whose holder's lease ran out is STOPPED
-- (its worker is gone, so nothing runs it any more), whatever its service or queue: no worker has to
-- serve its queue for a stop to finish. worker_id stays: who held it last (its service_stopped event).
UPDATE conveyor_services
SET status = 'stopped', token = NULL, lease_until = NULL, run_generation = NULL, free_since = :now,
    updated_at = :now
WHERE wanted = 0 AND status IN ('starting', 'running', 'stopping') AND lease_until < :now
RETURNING {service_columns};

-- name: claimable_services
-- only in this dialect: PostgreSQL picks and takes the rows in one statement (claim_services, FOR UPDATE
-- SKIP LOCKED); here the store picks them with this, then takes each (take_service), under the one write lock.
-- The rows :worker_id may take: of :services (JSON array), local to no worker or to it, wanted, and either
-- PENDING and due, or held with a lease run out (taken over: lost_by names the worker that held it).
-- free_at is when the row was let go: free_since (PENDING) or the lease's end (taken over). A row of an
-- instance in :spread (which the worker runs a replica of already) waits until it was free at
-- :spread_before or earlier, so that replicas go to other workers while there are some. Oldest free first.
SELECT name, replica, lost_by FROM (
    SELECT name, replica, CASE WHEN status = 'pending' THEN NULL ELSE worker_id END AS lost_by,
           CASE WHEN status = 'pending' THEN coalesce(free_since, created_at) ELSE lease_until END AS free_at
    FROM conveyor_services
    WHERE service IN (SELECT value FROM json_each(:services))
      AND (local_to IS NULL OR local_to = :worker_id)
      AND wanted = 1
      AND ((status = 'pending' AND not_before <= :now)
           OR (status IN ('starting', 'running', 'stopping') AND lease_until < :now))
)
WHERE name NOT IN (SELECT value FROM json_each(:spread)) OR free_at <= :spread_before
ORDER BY free_at, name, replica
LIMIT :limit;

-- name: take_service
-- only in this dialect: PostgreSQL takes the rows in the statement that picks them (claim_services).
-- One row claimable_services picked: STARTING, held by :worker_id with a fresh :token until :until, to run
-- its current generation (run_generation); started_at waits for service_running.
UPDATE conveyor_services
SET status = 'starting', worker_id = :worker_id, token = :token, lease_until = :until,
    run_generation = generation, started_at = NULL, updated_at = :now
WHERE name = :name AND replica = :replica
RETURNING {service_columns};

-- name: renew_services
-- A keeper's renewal: the lease of every row :worker_id holds with one of :tokens (JSON array; each found
-- by the unique token index) runs to :until. A token not returned is lost: taken over, or its row deleted.
-- Rows of other workers or other tokens are never touched.
UPDATE conveyor_services SET lease_until = :until
WHERE token IN (SELECT value FROM json_each(:tokens)) AND worker_id = :worker_id
  AND status IN ('starting', 'running', 'stopping')
RETURNING {service_columns};

-- name: service_running
-- The run's function started: STARTING -> RUNNING, fenced by the token. No row: the token is not current
-- (taken over, removed) or the row is not STARTING any more (a stop or restart came first).
UPDATE conveyor_services SET status = 'running', started_at = :now, updated_at = :now
WHERE name = :name AND replica = :replica AND token = :token AND status = 'starting'
RETURNING {service_columns};

-- name: end_service_run
-- How a run ended (conveyor.service_rows.end_params), fenced by its token: no longer held (token, lease and
-- run_generation cleared; worker_id stays, who ran it last), free since now, :status, except that a
-- replica no longer wanted is STOPPED rather than PENDING (a stop came while it ran) and one wanted again
-- is PENDING rather than STOPPED when a newer generation is wanted (a start came after the stop its
-- worker saw), :not_before, one
-- more restart if :restarted, and :crashes / :last_error (JSON text) where given (NULL: left as they are).
-- No row: the token is not current, nothing is written.
UPDATE conveyor_services
SET status = CASE
        WHEN wanted = 0 AND :status = 'pending' THEN 'stopped'
        WHEN wanted = 1 AND :status = 'stopped' AND generation <> run_generation THEN 'pending'
        ELSE :status
    END,
    token = NULL, lease_until = NULL, run_generation = NULL, free_since = :now, not_before = :not_before,
    restarts = restarts + :restarted, crashes = coalesce(:crashes, crashes),
    last_error = coalesce(:last_error, last_error), updated_at = :now
WHERE name = :name AND replica = :replica AND token = :token
RETURNING {service_columns};

-- name: forget_local_services
-- The LOCAL instances of workers gone (:worker_ids, a JSON array): every replica of them, held or not;
-- what their service_removed events name.
DELETE FROM conveyor_services WHERE local_to IN (SELECT value FROM json_each(:worker_ids))
RETURNING name, service, queue, local_to;

-- accounts ----------------------------------------------------------------------------------------------
-- conveyor/backends/sqlite/accounts.py runs these (migrations/0007_accounts.sql): the HTTP API's users,
-- their tokens (the SHA-256 of the secret only) and the audit log. A user's or a token's change is a
-- producer commit (synced: an acknowledged new token or revocation survives a power cut); recording a
-- token's use is bookkeeping, not synced. Few rows: every step reads a primary key or an index.

-- name: token_columns
-- a fragment: a token's columns, in the order of conveyor.backends.rows.TOKEN_COLUMNS (row_to_token).
id, user_name, label, digest, created_at, last_used_at, revoked_at

-- name: put_user
-- A new user (created now), or the new permissions (:permissions, a JSON array) of the one of that name;
-- its created_at and tokens stay. The store reads get_user first, under the same write lock, to tell a
-- new one.
INSERT INTO conveyor_users (name, permissions, created_at) VALUES (:name, :permissions, :now)
ON CONFLICT (name) DO UPDATE SET permissions = excluded.permissions;

-- name: get_user
-- One user, by the primary key.
SELECT name, permissions, created_at FROM conveyor_users WHERE name = :name;

-- name: list_users
-- Every user, by name (the primary key's order).
SELECT name, permissions, created_at FROM conveyor_users ORDER BY name;

-- name: remove_user
-- The user; their tokens go too (delete_user_tokens), in the same transaction. Their jobs, schedules and
-- services stay, owned by the name (a user added again by that name owns them again).
DELETE FROM conveyor_users WHERE name = :name;

-- name: delete_user_tokens
-- remove_user's second statement: every token of the user, found by conveyor_tokens_user. In PostgreSQL too
-- (a statement of its own there as well: it must see a token added while the user's delete waited).
DELETE FROM conveyor_tokens WHERE user_name = :name;

-- name: add_token
-- A new token, only if its user exists (no row inserted: the store raises StoreError, no such user);
-- SQLite's write lock makes the check and the insert one step against remove_user. A taken id breaks the
-- primary key (IntegrityError: the store raises StoreError). Starts with INSERT for sqlite3's rowcount.
INSERT INTO conveyor_tokens (id, user_name, label, digest, created_at)
SELECT :id, name, :label, :digest, :created_at FROM conveyor_users WHERE name = :user;

-- name: get_token
-- One token by its id (the one a presented token carries), revoked or not: the caller verifies the
-- secret and the revocation.
SELECT {token_columns} FROM conveyor_tokens WHERE id = :id;

-- name: touch_token
-- only in this dialect: PostgreSQL records the use in get_token's own statement (a data-modifying CTE).
-- get_token's write, run only when the read found the presented secret's digest to be the token's and the
-- use last recorded more than :every seconds ago: the
-- use now, unless another process recorded one meanwhile (the same test, under the write lock), or the
-- token was revoked (a revoked token is never used). One write a minute per token at most.
UPDATE conveyor_tokens SET last_used_at = :now
WHERE id = :id AND revoked_at IS NULL AND (last_used_at IS NULL OR last_used_at < :now - :every);

-- name: list_tokens
-- Every token (:user NULL) or the user's, newest first; the id breaks ties. A few rows: a scan and a sort.
SELECT {token_columns} FROM conveyor_tokens
WHERE :user IS NULL OR user_name = :user
ORDER BY created_at DESC, id;

-- name: revoke_token
-- Revoked now, kept for the record; no row changes if there is no such token or it is revoked already
-- (the store answers False).
UPDATE conveyor_tokens SET revoked_at = :now WHERE id = :id AND revoked_at IS NULL;

-- name: audit
-- One audit entry (:data JSON text); its seq, the next AUTOINCREMENT number, is returned.
INSERT INTO conveyor_audit (at, user_name, action, target, data) VALUES (:now, :user, :action, :target, :data)
RETURNING seq;

-- name: audit_log
-- Entries after :after (everyone's, or :user's), oldest first, at most :limit: a range of the primary key,
-- filtered (an audit log of API changes is small, and a page stops at :limit). Writers are serial: seq
-- order is commit order, no entry is ever committed behind one a reader has passed.
SELECT seq, at, user_name, action, target, data FROM conveyor_audit
WHERE seq > :after AND (:user IS NULL OR user_name = :user)
ORDER BY seq
LIMIT :limit;
