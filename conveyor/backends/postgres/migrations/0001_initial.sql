-- conveyor on PostgreSQL, schema version 1.
-- Times are Unix seconds (double precision) passed in by the caller: the store never reads its own clock.
-- JSON columns are `json` (kept verbatim, so arguments and results round-trip byte for byte).
-- A scheduled job is stored as 'queued' with scheduled_at in the future.

CREATE TABLE conveyor_jobs (
    seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order: FIFO tie-break
    id               text NOT NULL UNIQUE,
    task             text NOT NULL,
    queue            text NOT NULL,
    priority         integer NOT NULL,
    args             json NOT NULL,
    kwargs           json NOT NULL,
    status           text NOT NULL
        CHECK (status IN ('queued', 'running', 'waiting', 'succeeded', 'failed', 'cancelled')),
    created_at       double precision NOT NULL,
    scheduled_at     double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    attempts         integer NOT NULL DEFAULT 0,
    retries          integer NOT NULL DEFAULT 0,
    max_retries      integer NOT NULL DEFAULT 0,
    timeout          double precision,
    result           json,
    error            json,
    exit_code        integer,
    progress         double precision NOT NULL DEFAULT 0,
    progress_message text NOT NULL DEFAULT '',
    worker_id        text,
    token            text,
    lease_expires_at double precision,
    key              text,
    result_ttl       double precision,
    expires_at       double precision,
    stage            integer NOT NULL DEFAULT 0,
    stages           json,
    results          json NOT NULL DEFAULT '[]'
) WITH (
    -- A queue table churns: every job is inserted, updated two or three times and deleted.
    -- Vacuum it after 1% of its rows are dead, not the default 20%, so indexes stay tight.
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);

-- The claim: due jobs of a queue by priority, then due time, then insertion. Partial, so it holds
-- only the waiting jobs, and a claim reads the first `limit` entries of one queue however many wait.
CREATE INDEX conveyor_jobs_claim
    ON conveyor_jobs (queue, priority DESC, scheduled_at, seq) WHERE status = 'queued';
-- Heartbeats (a worker's running jobs) and the rescue of expired leases; holds only running jobs.
CREATE INDEX conveyor_jobs_running
    ON conveyor_jobs (worker_id, lease_expires_at) WHERE status = 'running';
-- Pruning of finished jobs.
CREATE INDEX conveyor_jobs_expiry
    ON conveyor_jobs (expires_at) WHERE expires_at IS NOT NULL;
-- Listing by status, newest first.
CREATE INDEX conveyor_jobs_status ON conveyor_jobs (status, seq);
-- A key is unique among jobs that have not finished.
CREATE UNIQUE INDEX conveyor_jobs_key
    ON conveyor_jobs (key) WHERE key IS NOT NULL AND status IN ('queued', 'running', 'waiting');

-- Seconds as Python prints a float (5.0, 0.25), for the time-out message the leader writes.
CREATE FUNCTION conveyor_seconds(s double precision) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    RETURN CASE WHEN s = trunc(s) AND abs(s) < 1e15 THEN trunc(s)::bigint::text || '.0' ELSE s::text END;

-- Wake idle workers: whenever a job becomes claimable (enqueued, retried, released, rescued,
-- requeued), notify channel 'conveyor_jobs' with the job's queue. NOTIFY is transactional, so a
-- job enqueued inside a transaction wakes workers only when (and if) that transaction commits,
-- and identical notifications of one transaction are folded into one.
CREATE FUNCTION conveyor_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('conveyor_jobs', NEW.queue);
    RETURN NULL;
END;
$$;

-- Inserts notify once per statement and queue (a bulk enqueue of 10,000 jobs calls this once);
-- updates once per row, but only rows that become queued reach the function (claims, the
-- common update, are filtered out by the WHEN clause without a call).
CREATE FUNCTION conveyor_notify_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('conveyor_jobs', q.queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE status = 'queued') AS q;
    RETURN NULL;
END;
$$;

CREATE TRIGGER conveyor_jobs_notify_insert
    AFTER INSERT ON conveyor_jobs REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION conveyor_notify_inserted();
CREATE TRIGGER conveyor_jobs_notify_update
    AFTER UPDATE OF status ON conveyor_jobs
    FOR EACH ROW WHEN (NEW.status = 'queued' AND OLD.status <> 'queued') EXECUTE FUNCTION conveyor_notify();
