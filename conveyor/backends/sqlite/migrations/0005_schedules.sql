-- Schema 5: schedules (issue 12, docs/schedules.md): cron and interval schedules, the audit trail of
-- their ticks, and the link from a job to the schedule and tick that made it. Never edit a migration
-- that has shipped: add the next one.

-- A job a tick enqueued names its schedule and tick (NULL for every other job), so a user can find
-- every run of a schedule.
ALTER TABLE conveyor_jobs ADD COLUMN scheduled_by TEXT;
ALTER TABLE conveyor_jobs ADD COLUMN tick_at REAL;

-- A schedule's jobs, in insertion order (an index of SQLite's carries the rowid, seq, after its
-- columns). Partial: plain jobs, the hot path's inserts, cost it nothing.
CREATE INDEX IF NOT EXISTS conveyor_jobs_schedule ON conveyor_jobs (scheduled_by) WHERE scheduled_by IS NOT NULL;

-- One row per schedule (conveyor.schedule_types.ScheduleRecord). A cron in a time zone, or an
-- interval (every, from anchor); target is what a tick enqueues (JSON text); the policies; paused
-- 0/1; source 'code' (synced by workers) or 'stored'. next_at is the next tick not fired yet: the
-- compare-and-set guard of every fire (queries.sql advance_schedule).
CREATE TABLE IF NOT EXISTS conveyor_schedules (
    name         TEXT PRIMARY KEY,
    cron         TEXT,
    tz           TEXT NOT NULL DEFAULT 'UTC',
    every        REAL,
    anchor       REAL NOT NULL DEFAULT 0,
    target       TEXT NOT NULL,
    missed       TEXT NOT NULL,
    catch_up     REAL NOT NULL,
    grace        REAL NOT NULL,
    overlap      TEXT NOT NULL,
    jitter       REAL NOT NULL DEFAULT 0,
    paused       INTEGER NOT NULL DEFAULT 0,
    source       TEXT NOT NULL,
    next_at      REAL NOT NULL,
    last_tick_at REAL,
    last_job_id  TEXT,
    paused_at    REAL,
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL
);

-- due_schedules: the schedules not paused whose next tick has come, the most overdue first (name
-- breaks ties), read straight off this index: no scan of the schedules, no sort.
CREATE INDEX IF NOT EXISTS conveyor_schedules_due ON conveyor_schedules (next_at, name) WHERE paused = 0;

-- Every tick fired, with what became of it (conveyor.schedule_types.TickOutcome) and its job. The
-- primary key is the unique tick record: a tick is recorded, and its job enqueued, once, even by a
-- scheduler whose compare-and-set passed on a stale next_at. WITHOUT ROWID: the rows are stored in
-- key order, so a schedule's newest ticks (`ticks`) and its oldest (trim_ticks) are one range each.
-- data is JSON text ({"count", "until"} for ticks recorded together).
CREATE TABLE IF NOT EXISTS conveyor_schedule_ticks (
    schedule TEXT NOT NULL,
    tick_at  REAL NOT NULL,
    outcome  TEXT NOT NULL,
    job_id   TEXT,
    at       REAL NOT NULL,
    data     TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (schedule, tick_at)
) WITHOUT ROWID;
