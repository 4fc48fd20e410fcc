-- conveyor on PostgreSQL, schema version 5: schedules (cron and interval), their ticks' audit trail,
-- and the link from a job to the schedule and tick that made it.

-- A job a tick enqueued names its schedule and tick (NULL for every other job). No default: no
-- table rewrite, existing rows are plain jobs.
ALTER TABLE conveyor_jobs
    ADD COLUMN scheduled_by text,             -- the schedule whose tick enqueued it
    ADD COLUMN tick_at      double precision; -- that tick (Unix seconds)

-- A schedule's jobs, in insertion order. Partial: plain jobs, the hot path's inserts, cost it nothing.
CREATE INDEX conveyor_jobs_schedule ON conveyor_jobs (scheduled_by, seq) WHERE scheduled_by IS NOT NULL;

-- One row per schedule (conveyor.schedule_types.ScheduleRecord): a cron in a time zone, or an
-- interval (every, from anchor); target is what a tick enqueues; the policies; source 'code' (synced
-- by workers) or 'stored'. next_at is the next tick not fired yet: the compare-and-set guard of
-- every fire (queries.sql advance_schedule), whose row lock serialises concurrent fires.
CREATE TABLE conveyor_schedules (
    name         text PRIMARY KEY,
    cron         text,
    tz           text NOT NULL DEFAULT 'UTC',
    every        double precision,
    anchor       double precision NOT NULL DEFAULT 0,
    target       json NOT NULL,
    missed       text NOT NULL,
    catch_up     double precision NOT NULL,
    grace        double precision NOT NULL,
    overlap      text NOT NULL,
    jitter       double precision NOT NULL DEFAULT 0,
    paused       boolean NOT NULL DEFAULT false,
    source       text NOT NULL,
    next_at      double precision NOT NULL,
    last_tick_at double precision,
    last_job_id  text,
    paused_at    double precision,
    created_at   double precision NOT NULL,
    updated_at   double precision NOT NULL
);

-- due_schedules: the schedules not paused whose next tick has come, the most overdue first (name
-- breaks ties), read straight off this index: no scan, no sort.
CREATE INDEX conveyor_schedules_due ON conveyor_schedules (next_at, name) WHERE NOT paused;

-- Every tick fired, with what became of it (conveyor.schedule_types.TickOutcome) and its job. The
-- primary key is the unique tick record: a tick is recorded, and its job enqueued, once, even by a
-- scheduler whose compare-and-set passed on a stale next_at. Its index also serves a schedule's
-- newest ticks (`ticks`) and the trim of its oldest (trim_ticks).
CREATE TABLE conveyor_schedule_ticks (
    schedule text NOT NULL,
    tick_at  double precision NOT NULL,
    outcome  text NOT NULL,
    job_id   text,
    at       double precision NOT NULL,
    data     json NOT NULL DEFAULT '{}',
    PRIMARY KEY (schedule, tick_at)
);
