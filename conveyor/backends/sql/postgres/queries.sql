-- Every statement the PostgreSQL store runs, by name (`-- name: NAME` starts a block).
-- Parameters are psycopg's %(name)s. Times are Unix seconds from the caller.
-- JSON columns are read back as text (`::text`) and decoded by conveyor.codec, as SQLite does.

-- name: migrate_lock
-- Serialises concurrent `conveyor migrate` runs (and App set-ups) on this schema until commit.
SELECT pg_advisory_xact_lock(1129270853, hashtext(current_schema()));

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS conveyor_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_applied
SELECT version FROM conveyor_migrations ORDER BY version;

-- name: schema_version
-- The latest applied migration, or NULL; an error if the table is missing (caught by the caller).
SELECT max(version) FROM conveyor_migrations;

-- name: record_migration
INSERT INTO conveyor_migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: jobs_table_oid
-- Keys the leader lock to this conveyor_jobs table, so two conveyor schemas in one database
-- elect a leader each.
SELECT 'conveyor_jobs'::regclass::oid::bigint;

-- name: insert
-- One job; a key held by an unfinished job makes it a no-op (no row returned), a taken id raises.
INSERT INTO conveyor_jobs (id, task, queue, priority, args, kwargs, status, created_at, scheduled_at,
                           max_retries, timeout, key, result_ttl, stages)
VALUES (%(id)s, %(task)s, %(queue)s, %(priority)s, %(args)s::json, %(kwargs)s::json, 'queued', %(now)s,
        %(scheduled_at)s, %(max_retries)s, %(timeout)s, %(key)s, %(result_ttl)s, %(stages)s::json)
ON CONFLICT (key) WHERE key IS NOT NULL AND status IN ('queued', 'running', 'waiting') DO NOTHING
RETURNING seq;

-- name: insert_many
-- Jobs without a key, all in one statement: one row per element of the parallel arrays (each
-- named as insert's parameter of that column), in order, so seq, the FIFO tie-break, follows the
-- batch. A taken id raises.
INSERT INTO conveyor_jobs (id, task, queue, priority, args, kwargs, status, created_at, scheduled_at,
                           max_retries, timeout, result_ttl, stages)
SELECT id, task, queue, priority, args::json, kwargs::json, 'queued', %(now)s, scheduled_at,
       max_retries, timeout, result_ttl, stages::json
FROM unnest(%(id)s::text[], %(task)s::text[], %(queue)s::text[], %(priority)s::int[],
            %(args)s::text[], %(kwargs)s::text[], %(scheduled_at)s::float8[], %(max_retries)s::int[],
            %(timeout)s::float8[], %(result_ttl)s::float8[], %(stages)s::text[])
     WITH ORDINALITY AS t(id, task, queue, priority, args, kwargs, scheduled_at, max_retries, timeout,
                          result_ttl, stages, n)
ORDER BY n;

-- name: worker_session
-- Set on the sessions of the worker pool, which only claims, writes outcomes and renews leases.
-- synchronous_commit: commit without waiting for the WAL flush. A server crash can lose the last
-- such commits: a claim or an outcome lost that way makes the job run again once its lease runs
-- out, which at-least-once allows. Enqueues and control calls use the other pool and the
-- server's setting.
-- plan_cache_mode: these few statements run thousands of times a second with plans that do not
-- depend on their parameters (the claim is an index scan whatever the queue); planning the claim
-- afresh each time (PostgreSQL's default for it here) cost 0.2 ms of a 0.3 ms claim.
-- jit: off, as for any short statement; a generic plan's cost estimates could otherwise switch
-- it on for a claim and spend milliseconds compiling.
SET synchronous_commit = off;
SET plan_cache_mode = force_generic_plan;
SET jit = off;

-- name: find_unfinished_by_key
SELECT id, task, queue, priority, args::text, kwargs::text, status, created_at, scheduled_at, started_at,
       finished_at, attempts, retries, max_retries, timeout, result::text, error::text, exit_code, progress,
       progress_message, worker_id, token, lease_expires_at, key, result_ttl, expires_at, stage,
       stages::text, results::text
FROM conveyor_jobs WHERE key = %(key)s AND status IN ('queued', 'running', 'waiting');

-- name: existing_ids
SELECT id FROM conveyor_jobs WHERE id = ANY(%(ids)s);

-- name: claim
-- Per queue, the first `limit` due jobs in claim order straight off conveyor_jobs_claim, skipping
-- rows another claim has locked; then the best `limit` of those across queues become RUNNING, each
-- with a fresh fencing token. Rows locked but not kept stay queued (their locks end with the
-- statement). One statement, so one round trip and no window between choosing and taking.
-- The chosen rows are matched by `seq = ANY(ARRAY(...))`, an index probe per row whatever the
-- planner guesses of the LIMIT: the worker pool runs this as a generic plan (see worker_session),
-- and a join there was planned as a hash join over the whole table (260x slower at 1M queued).
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
RETURNING j.seq, j.id, j.task, j.queue, j.priority, j.args::text, j.kwargs::text, j.status, j.created_at,
          j.scheduled_at, j.started_at, j.finished_at, j.attempts, j.retries, j.max_retries, j.timeout,
          j.result::text, j.error::text, j.exit_code, j.progress, j.progress_message, j.worker_id, j.token,
          j.lease_expires_at, j.key, j.result_ttl, j.expires_at, j.stage, j.stages::text, j.results::text;

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
UPDATE conveyor_jobs SET lease_expires_at = %(until)s
WHERE status = 'running' AND worker_id = %(worker_id)s AND token = ANY(%(tokens)s)
RETURNING token;

-- name: progress
UPDATE conveyor_jobs SET progress = %(percent)s, progress_message = %(message)s
WHERE id = %(id)s AND token = %(token)s AND status = 'running';

-- name: finish_succeeded
-- `results` gains this stage's result: the JSON text is spliced, so it stays verbatim.
UPDATE conveyor_jobs
SET status = 'succeeded', result = %(result)s::json,
    results = (CASE WHEN results::text = '[]' THEN '[' || %(result)s || ']'
                    ELSE left(results::text, -1) || ',' || %(result)s || ']' END)::json,
    error = NULL, exit_code = 0, progress = 100, finished_at = %(now)s, expires_at = %(now)s + result_ttl,
    token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND token = %(token)s AND status = 'running';

-- name: finish_succeeded_many
-- finish_succeeded for a batch of runs in one statement; returns the tokens it wrote (a stale
-- token, of a run cancelled or rescued meanwhile, matches no row and is not returned).
UPDATE conveyor_jobs AS j
SET status = 'succeeded', result = r.result::json,
    results = (CASE WHEN j.results::text = '[]' THEN '[' || r.result || ']'
                    ELSE left(j.results::text, -1) || ',' || r.result || ']' END)::json,
    error = NULL, exit_code = 0, progress = 100, finished_at = %(now)s, expires_at = %(now)s + j.result_ttl,
    token = NULL, lease_expires_at = NULL
FROM unnest(%(ids)s::text[], %(tokens)s::text[], %(results)s::text[]) AS r(id, token, result)
WHERE j.id = r.id AND j.token = r.token AND j.status = 'running'
RETURNING r.token;

-- name: finish_failed
UPDATE conveyor_jobs
SET status = 'failed', error = %(error)s::json, exit_code = %(exit_code)s, finished_at = %(now)s,
    expires_at = %(now)s + result_ttl, token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND token = %(token)s AND status = 'running';

-- name: finish_retry
UPDATE conveyor_jobs
SET status = 'queued', error = %(error)s::json, exit_code = %(exit_code)s, retries = retries + 1,
    scheduled_at = %(retry_at)s, token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND token = %(token)s AND status = 'running';

-- name: finish_released
UPDATE conveyor_jobs SET status = 'queued', token = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND token = %(token)s AND status = 'running';

-- name: finish_discarded
DELETE FROM conveyor_jobs WHERE id = %(id)s AND token = %(token)s AND status = 'running';

-- name: get
SELECT id, task, queue, priority, args::text, kwargs::text, status, created_at, scheduled_at, started_at,
       finished_at, attempts, retries, max_retries, timeout, result::text, error::text, exit_code, progress,
       progress_message, worker_id, token, lease_expires_at, key, result_ttl, expires_at, stage,
       stages::text, results::text
FROM conveyor_jobs WHERE id = %(id)s;

-- name: list_jobs
-- A NULL filter matches everything (each NULL test is folded away when the statement is planned).
SELECT id, task, queue, priority, args::text, kwargs::text, status, created_at, scheduled_at, started_at,
       finished_at, attempts, retries, max_retries, timeout, result::text, error::text, exit_code, progress,
       progress_message, worker_id, token, lease_expires_at, key, result_ttl, expires_at, stage,
       stages::text, results::text
FROM conveyor_jobs
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(due_before)s::float8 IS NULL OR scheduled_at <= %(due_before)s)
  AND (%(due_after)s::float8 IS NULL OR scheduled_at > %(due_after)s)
ORDER BY seq DESC
LIMIT %(limit)s OFFSET %(offset)s;

-- name: counts
SELECT queue, status, count(*) FROM conveyor_jobs GROUP BY queue, status;

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
UPDATE conveyor_jobs
SET attempts = 0, retries = 0, error = NULL, progress = 0, progress_message = '', started_at = NULL,
    worker_id = NULL, stage = 0, results = '[]'
WHERE id = %(id)s;

-- name: abort_overdue_retry
-- Running past timeout + margin with retries left: queued again at once, one retry used.
UPDATE conveyor_jobs
SET status = 'queued', retries = retries + 1, scheduled_at = %(now)s, exit_code = 130,
    error = json_build_object('type', 'TimeoutError', 'traceback', '', 'message',
                              'job exceeded its timeout of ' || conveyor_seconds(timeout) || ' s'),
    token = NULL, lease_expires_at = NULL
WHERE status = 'running' AND timeout IS NOT NULL AND started_at + timeout + %(margin)s < %(now)s
  AND retries < max_retries
RETURNING id;

-- name: abort_overdue_fail
UPDATE conveyor_jobs
SET status = 'failed', exit_code = 130,
    error = json_build_object('type', 'TimeoutError', 'traceback', '', 'message',
                              'job exceeded its timeout of ' || conveyor_seconds(timeout) || ' s'),
    finished_at = %(now)s, expires_at = %(now)s + result_ttl, token = NULL, lease_expires_at = NULL
WHERE status = 'running' AND timeout IS NOT NULL AND started_at + timeout + %(margin)s < %(now)s
RETURNING id;

-- name: rescue_expired
UPDATE conveyor_jobs SET status = 'queued', token = NULL, lease_expires_at = NULL
WHERE status = 'running' AND lease_expires_at < %(now)s
RETURNING id;

-- name: leader_try_lock
-- A session lock: held while the leader's connection lives, released by the server when it dies.
SELECT pg_try_advisory_lock(1129270854, %(key)s);

-- name: leader_unlock
SELECT pg_advisory_unlock(1129270854, %(key)s);

-- name: leader_keepalive
-- The leader's lease: if it stops renewing for `ttl` seconds the server ends its session
-- (idle_session_timeout), which releases the lock for the next leader.
SELECT set_config('idle_session_timeout', %(ms)s, false);

-- name: prune_expired
DELETE FROM conveyor_jobs WHERE expires_at <= %(now)s AND status IN ('succeeded', 'failed', 'cancelled');

-- name: prune_before
DELETE FROM conveyor_jobs WHERE finished_at < %(before)s AND status IN ('succeeded', 'failed', 'cancelled');

-- name: destroy_all
DELETE FROM conveyor_jobs;

-- name: listen
LISTEN conveyor_jobs;

-- name: migrations_table_exists
SELECT to_regclass('conveyor_migrations') IS NOT NULL;

-- name: savepoint
SAVEPOINT conveyor_enqueue;

-- name: release_savepoint
RELEASE SAVEPOINT conveyor_enqueue;

-- name: rollback_to_savepoint
ROLLBACK TO SAVEPOINT conveyor_enqueue;
