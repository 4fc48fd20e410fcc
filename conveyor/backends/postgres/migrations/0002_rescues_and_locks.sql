-- conveyor on PostgreSQL, schema version 2: rescue counts and named locks.

-- Runs lost because their worker died (its lease ran out): the leader fails a job rescued too
-- often as a poison job. Existing rows start at 0 (a constant default: no table rewrite).
ALTER TABLE conveyor_jobs ADD COLUMN rescues integer NOT NULL DEFAULT 0;

-- Named locks with expiry (the leader holds 'leader'): a lock is held while expires_at is
-- ahead of the caller's clock; an expired one is taken over by the next acquire.
CREATE TABLE conveyor_locks (
    name       text PRIMARY KEY,
    owner      text NOT NULL,
    expires_at double precision NOT NULL
);

-- conveyor_seconds() of schema 1 is no longer called (the leader words time-out errors in
-- Python); it stays so workers of the previous release keep running during a rolling upgrade.
