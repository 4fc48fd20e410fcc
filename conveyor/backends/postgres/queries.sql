-- Every statement the PostgreSQL store runs, by name (`-- name: NAME` starts a block).
-- Parameters are psycopg's %(name)s. Times are Unix seconds from the caller.
-- JSON columns are read back as text (`{job_columns}` expands to `args::text, ...`) and decoded
-- by conveyor.codec, as SQLite does. Column lists are placeholders expanded from
-- conveyor.backends.columns when the file is loaded, so a new column is one edit there.
-- The statement names are shared with sqlite/queries.sql; a statement only this dialect has
-- says why in a line `-- only in this dialect: ...`.

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

-- name: insert
-- One job (the parameters are columns.insert_params, one per insert column); a key held by an
-- unfinished job makes it a no-op (no row returned), a taken id raises.
INSERT INTO conveyor_jobs ({insert_columns}, status)
VALUES (%(id)s, %(task)s, %(queue)s, %(priority)s, %(args)s::json, %(kwargs)s::json, %(created_at)s,
        %(scheduled_at)s, %(max_retries)s, %(timeout)s, %(key)s, %(result_ttl)s, %(stages)s::json, 'queued')
ON CONFLICT (key) WHERE key IS NOT NULL AND status IN ('queued', 'running', 'waiting') DO NOTHING
RETURNING seq;

-- name: insert_copy
-- only in this dialect: a batch streamed by COPY (SQLite's executemany of insert costs no round trips).
-- Jobs without a key, one row each (insert_row's values, then the status), in the batch's order, so
-- seq, the FIFO tie-break, follows the batch. COPY skips the parsing and planning a multi-row
-- INSERT pays per value, and fires the statement trigger once: one notification per queue. A taken
-- id aborts the whole COPY (nothing of the batch is written) with insert's UniqueViolation.
COPY conveyor_jobs ({insert_columns}, status) FROM STDIN;

-- name: find_unfinished_by_key
-- The job that holds a key, when an insert of that key was a no-op.
SELECT {job_columns} FROM conveyor_jobs WHERE key = %(key)s AND status IN ('queued', 'running', 'waiting');

-- name: claim
-- Per queue, the first `limit` due jobs in claim order straight off conveyor_jobs_claim, skipping
-- rows another claim has locked; then the best `limit` of those across queues become RUNNING, each
-- with a fresh fencing token. Rows locked but not kept stay queued (their locks end with the
-- statement). One statement, so one round trip and no window between choosing and taking.
-- The chosen rows are matched by `seq = ANY(ARRAY(...))`, an index probe per row whatever the
-- planner guesses of the LIMIT: the worker pool runs this as a generic plan (see worker_session),
-- and a join there was planned as a hash join over the whole table (260x slower at 1M queued).
-- RETURNING has no order: seq comes first so the caller can sort by claim order.
UPDATE conveyor_jobs AS j
SET status = 'running', token = replace(gen_random_uuid()::text, '-', ''), worker_id = %(worker_id)s,
    attempts = j.attempts + 1, started_at = %(now)s, finished_at = NULL, lease_expires_at = %(until)s,
    progress = 0, progress_message = ''
WHERE j.status = 'queued' AND j.seq = ANY(ARRAY(
    SELECT c.seq
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT seq, priority, scheduled_at FROM conveyor_jobs
        WHERE status = 'queued' AND queue = q.name AND scheduled_at <= %(now)s
        ORDER BY priority DESC, scheduled_at, seq
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    ORDER BY c.priority DESC, c.scheduled_at, c.seq
    LIMIT %(limit)s
))
RETURNING j.seq, {job_columns:j};

-- name: start
-- Eager mode: claim this one queued job, due or not, as `claim` would.
UPDATE conveyor_jobs
SET status = 'running', token = replace(gen_random_uuid()::text, '-', ''), worker_id = %(worker_id)s,
    attempts = attempts + 1, started_at = %(now)s, finished_at = NULL, lease_expires_at = %(until)s,
    progress = 0, progress_message = ''
WHERE id = %(id)s AND status = 'queued'
RETURNING {job_columns};

-- name: next_due
-- When the next queued job of these queues falls due: per queue and priority, one probe of
-- conveyor_jobs_claim (no scan of a long backlog of scheduled jobs).
SELECT min(t.scheduled_at)
FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN unnest(%(priorities)s::int[]) AS p(value)
CROSS JOIN LATERAL (
    SELECT scheduled_at FROM conveyor_jobs
    WHERE status = 'queued' AND queue = q.name AND priority = p.value
    ORDER BY scheduled_at
    LIMIT 1
) AS t;

-- name: extend_leases
-- A worker's heartbeat: the tokens returned are the runs it still holds.
UPDATE conveyor_jobs SET lease_expires_at = %(until)s
WHERE status = 'running' AND worker_id = %(worker_id)s AND token = ANY(%(tokens)s)
RETURNING token;

-- name: extend_worker_leases
-- A supervisor renews its live children's runs from outside (conveyor_jobs_running is keyed by worker).
UPDATE conveyor_jobs SET lease_expires_at = %(until)s
WHERE status = 'running' AND worker_id = ANY(%(worker_ids)s);

-- name: progress
UPDATE conveyor_jobs SET progress = %(percent)s, progress_message = %(message)s
WHERE id = %(id)s AND token = %(token)s AND status = 'running';

-- The finish_* statements write one run's outcome, fenced by its token; with `lease_before` (the
-- leader's rescue) only if the lease ran out before that time, so a worker that renewed keeps its job.

-- name: finish_succeeded
-- `results` gains this stage's result: the JSON text is spliced, so it stays verbatim.
UPDATE conveyor_jobs
SET status = 'succeeded', result = %(result)s::json,
    results = (CASE WHEN results::text = '[]' THEN '[' || %(result)s || ']'
                    ELSE left(results::text, -1) || ',' || %(result)s || ']' END)::json,
    error = NULL, exit_code = 0, progress = 100, finished_at = %(now)s, expires_at = %(now)s + result_ttl,
    token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND token = %(token)s AND status = 'running'
  AND (%(lease_before)s::float8 IS NULL OR lease_expires_at < %(lease_before)s);

-- name: finish_succeeded_many
-- only in this dialect: a batch of successes in one statement over arrays (one round trip);
-- SQLite runs finish_succeeded per report in one local transaction.
-- Returns the tokens it wrote (a stale token, of a run cancelled or rescued meanwhile, matches no
-- row and is not returned). Reports with lease_before go through finish_succeeded.
-- The arrays are sent in binary (%(x)b): psycopg quotes each element of a text array in Python
-- (a regex per element), five times the cost of the binary form, paid per finished job.
UPDATE conveyor_jobs AS j
SET status = 'succeeded', result = r.result::json,
    results = (CASE WHEN j.results::text = '[]' THEN '[' || r.result || ']'
                    ELSE left(j.results::text, -1) || ',' || r.result || ']' END)::json,
    error = NULL, exit_code = 0, progress = 100, finished_at = %(now)s, expires_at = %(now)s + j.result_ttl,
    token = NULL, lease_expires_at = NULL
FROM unnest(%(ids)b::text[], %(tokens)b::text[], %(results)b::text[]) AS r(id, token, result)
WHERE j.id = r.id AND j.token = r.token AND j.status = 'running'
RETURNING r.token;

-- name: finish_failed
UPDATE conveyor_jobs
SET status = 'failed', error = %(error)s::json, exit_code = %(exit_code)s, finished_at = %(now)s,
    expires_at = %(now)s + result_ttl, token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND token = %(token)s AND status = 'running'
  AND (%(lease_before)s::float8 IS NULL OR lease_expires_at < %(lease_before)s);

-- name: finish_retry
-- Queued again at retry_at, one retry used (the update trigger wakes workers).
UPDATE conveyor_jobs
SET status = 'queued', error = %(error)s::json, exit_code = %(exit_code)s, retries = retries + 1,
    scheduled_at = %(retry_at)s, token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND token = %(token)s AND status = 'running'
  AND (%(lease_before)s::float8 IS NULL OR lease_expires_at < %(lease_before)s);

-- name: finish_released
-- Handed back, no retry used: by a stopping worker (due again at once, in its old place in line), or
-- by one that cannot run it (an unknown task: due at retry_at, with the reason in error, so a user
-- sees why it waits; without one, an earlier run's error stays).
UPDATE conveyor_jobs
SET status = 'queued', token = NULL, lease_expires_at = NULL,
    scheduled_at = coalesce(%(retry_at)s::float8, scheduled_at), error = coalesce(%(error)s::json, error)
WHERE id = %(id)s AND token = %(token)s AND status = 'running'
  AND (%(lease_before)s::float8 IS NULL OR lease_expires_at < %(lease_before)s);

-- name: finish_rescued
-- Its worker died (the lease ran out): queued again, no retry used, one more rescue counted
-- (the leader fails a job rescued too often, as a poison job).
UPDATE conveyor_jobs SET status = 'queued', rescues = rescues + 1, token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND token = %(token)s AND status = 'running'
  AND (%(lease_before)s::float8 IS NULL OR lease_expires_at < %(lease_before)s);

-- name: finish_discarded
DELETE FROM conveyor_jobs
WHERE id = %(id)s AND token = %(token)s AND status = 'running'
  AND (%(lease_before)s::float8 IS NULL OR lease_expires_at < %(lease_before)s);

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

-- name: list_jobs
-- A NULL filter matches everything (each NULL test is folded away when the statement is planned).
SELECT {job_columns}
FROM conveyor_jobs
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(id_prefix)s::text IS NULL OR starts_with(id, %(id_prefix)s))  -- `conveyor job 3f2a`
  AND (%(due_before)s::float8 IS NULL OR scheduled_at <= %(due_before)s)
  AND (%(due_after)s::float8 IS NULL OR scheduled_at > %(due_after)s)
ORDER BY seq DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: counts
-- A queued job not due yet counts as scheduled.
SELECT queue, CASE WHEN status = 'queued' AND scheduled_at > %(now)s THEN 'scheduled' ELSE status END AS shown,
       count(*)
FROM conveyor_jobs GROUP BY queue, shown;

-- name: cancel
UPDATE conveyor_jobs
SET status = 'cancelled', exit_code = 130, finished_at = %(now)s, expires_at = %(now)s + result_ttl,
    token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND status IN ('queued', 'running', 'waiting');

-- name: requeue
UPDATE conveyor_jobs
SET status = 'queued', scheduled_at = %(now)s, finished_at = NULL, expires_at = NULL, exit_code = NULL,
    result = NULL
WHERE id = %(id)s AND status IN ('failed', 'cancelled');

-- name: reset
-- With requeue(reset=True): the job starts over, counters, error and stages zeroed.
UPDATE conveyor_jobs
SET attempts = 0, retries = 0, rescues = 0, error = NULL, progress = 0, progress_message = '', started_at = NULL,
    worker_id = NULL, stage = 0, results = '[]'
WHERE id = %(id)s;

-- name: acquire_lock
-- Take a free or expired lock, or renew one's own, in one statement: a row comes back only if
-- `owner` holds the lock now. Concurrent takers serialise on the row (or the insert's key).
INSERT INTO conveyor_locks (name, owner, expires_at) VALUES (%(name)s, %(owner)s, %(until)s)
ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
WHERE conveyor_locks.owner = excluded.owner OR conveyor_locks.expires_at < %(now)s
RETURNING owner;

-- name: release_lock
DELETE FROM conveyor_locks WHERE name = %(name)s AND owner = %(owner)s;

-- name: prune_expired
DELETE FROM conveyor_jobs WHERE expires_at <= %(now)s AND status IN ('succeeded', 'failed', 'cancelled');

-- name: prune_before
DELETE FROM conveyor_jobs WHERE finished_at < %(before)s AND status IN ('succeeded', 'failed', 'cancelled');

-- name: destroy_all
-- A test hook: every job and every lock (two statements, no parameters).
DELETE FROM conveyor_jobs;
DELETE FROM conveyor_locks;
