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

-- name: insert
-- One job (executemany for a batch). A taken id, or a key held by an unfinished job
-- (conveyor_jobs_key), raises IntegrityError: the store looks keys up first, in the same transaction.
INSERT INTO conveyor_jobs (status, {insert_columns}) VALUES ('queued', {insert_values});

-- name: find_unfinished_by_key
-- The job holding a key, which an enqueue with that key returns instead of inserting.
SELECT {job_columns} FROM conveyor_jobs
WHERE key = :key AND status IN ('queued', 'running', 'waiting');

-- workers --------------------------------------------------------------------------------------------

-- name: next_due
-- When the next queued job of these queues falls due: one probe of conveyor_jobs_claim per queue and
-- priority (no scan of a backlog of scheduled jobs). Also the claim's cheap first look, outside the
-- write lock, so an idle poll never takes it. :queues and :priorities are JSON arrays.
SELECT min((SELECT min(scheduled_at) FROM conveyor_jobs
            WHERE status = 'queued' AND queue = q.value AND priority = p.value))
FROM json_each(:queues) AS q, json_each(:priorities) AS p;

-- name: claim
-- The first :limit due jobs of these queues in claim order (priority, due time, insertion) become
-- RUNNING, each with a fresh fencing token and a lease until :until. SQLite's write lock is held,
-- so no other claim runs between choosing and taking; `status = 'queued'` is the fence regardless.
UPDATE conveyor_jobs
SET status = 'running', token = lower(hex(randomblob(12))), worker_id = :worker_id,
    attempts = attempts + 1, started_at = :now, finished_at = NULL, lease_expires_at = :until,
    progress = 0, progress_message = ''
WHERE status = 'queued' AND seq IN (
    SELECT seq FROM conveyor_jobs
    WHERE status = 'queued' AND queue IN ({queues}) AND scheduled_at <= :now
    ORDER BY priority DESC, scheduled_at, seq
    LIMIT :limit
)
RETURNING {job_columns};

-- name: start
-- Claim one given job, due or not (eager mode runs the job it has just enqueued); no row if it is
-- not queued (already claimed, cancelled, gone).
UPDATE conveyor_jobs
SET status = 'running', token = lower(hex(randomblob(12))), worker_id = :worker_id,
    attempts = attempts + 1, started_at = :now, finished_at = NULL, lease_expires_at = :until,
    progress = 0, progress_message = ''
WHERE id = :id AND status = 'queued'
RETURNING {job_columns};

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
UPDATE conveyor_jobs SET progress = :percent, progress_message = :message
WHERE id = :id AND token = :token AND status = 'running';

-- Every finish_* writes one OutcomeKind for the current run only (id, token, running: the fence),
-- and with :lease_before only if the run's lease ran out before then (the leader's guard: a worker
-- that renewed its lease meanwhile keeps its job). A stale run matches no row and writes nothing.

-- name: finish_succeeded
-- `results` gains this stage's result as JSON (json() keeps the encoded text's values and order).
UPDATE conveyor_jobs
SET status = 'succeeded', result = :result, results = json_insert(results, '$[#]', json(:result)),
    error = NULL, exit_code = 0, progress = 100, finished_at = :now, expires_at = :now + result_ttl,
    token = NULL, lease_expires_at = NULL
WHERE id = :id AND token = :token AND status = 'running'
  AND (:lease_before IS NULL OR lease_expires_at < :lease_before);

-- name: finish_failed
UPDATE conveyor_jobs
SET status = 'failed', error = :error, exit_code = :exit_code, finished_at = :now,
    expires_at = :now + result_ttl, token = NULL, lease_expires_at = NULL
WHERE id = :id AND token = :token AND status = 'running'
  AND (:lease_before IS NULL OR lease_expires_at < :lease_before);

-- name: finish_retry
-- Queued again at :retry_at with one retry used; the error stays readable until the next run ends.
UPDATE conveyor_jobs
SET status = 'queued', error = :error, exit_code = :exit_code, retries = retries + 1,
    scheduled_at = :retry_at, token = NULL, lease_expires_at = NULL
WHERE id = :id AND token = :token AND status = 'running'
  AND (:lease_before IS NULL OR lease_expires_at < :lease_before);

-- name: finish_released
-- Handed back, no retry used: by a stopping worker (due again at once, in its old place in line), or
-- by one that cannot run it (an unknown task: due at :retry_at, with the reason in :error, so a user
-- sees why it waits; without one, an earlier run's error stays).
UPDATE conveyor_jobs
SET status = 'queued', token = NULL, lease_expires_at = NULL,
    scheduled_at = coalesce(:retry_at, scheduled_at), error = coalesce(:error, error)
WHERE id = :id AND token = :token AND status = 'running'
  AND (:lease_before IS NULL OR lease_expires_at < :lease_before);

-- name: finish_rescued
-- Its worker died (the lease ran out): queued again as it was, no retry used, one more rescue
-- counted so a job that kills every worker can be failed as poison.
UPDATE conveyor_jobs SET status = 'queued', rescues = rescues + 1, token = NULL, lease_expires_at = NULL
WHERE id = :id AND token = :token AND status = 'running'
  AND (:lease_before IS NULL OR lease_expires_at < :lease_before);

-- name: finish_discarded
DELETE FROM conveyor_jobs
WHERE id = :id AND token = :token AND status = 'running'
  AND (:lease_before IS NULL OR lease_expires_at < :lease_before);

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

-- name: list_jobs
-- A NULL filter matches everything. Newest first, by insertion order.
SELECT {job_columns} FROM conveyor_jobs
WHERE (:queue IS NULL OR queue = :queue)
  AND (:status IS NULL OR status = :status)
  AND (:task IS NULL OR task = :task)
  AND (:id_prefix IS NULL OR substr(id, 1, length(:id_prefix)) = :id_prefix)  -- `conveyor job 3f2a`
  AND (:due_before IS NULL OR scheduled_at <= :due_before)
  AND (:due_after IS NULL OR scheduled_at > :due_after)
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

-- locks ------------------------------------------------------------------------------------------------

-- name: acquire_lock
-- Take a free or expired lock, or renew our own; no row changes while another owner holds it.
INSERT INTO conveyor_locks (name, owner, expires_at) VALUES (:name, :owner, :until)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE conveyor_locks.owner = excluded.owner OR conveyor_locks.expires_at < :now;

-- name: release_lock
DELETE FROM conveyor_locks WHERE name = :name AND owner = :owner;

-- admin -----------------------------------------------------------------------------------------------

-- name: prune_expired
-- Finished jobs past their expiry (conveyor_jobs_expiry).
DELETE FROM conveyor_jobs WHERE expires_at <= :now AND status IN ('succeeded', 'failed', 'cancelled');

-- name: prune_before
DELETE FROM conveyor_jobs WHERE finished_at < :before AND status IN ('succeeded', 'failed', 'cancelled');

-- name: destroy_all
-- Two statements, run in one transaction: every job and every lock.
DELETE FROM conveyor_jobs;
DELETE FROM conveyor_locks;
