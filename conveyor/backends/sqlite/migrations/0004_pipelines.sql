-- Schema 4: pipeline jobs (issue 11, docs/pipelines.md): a job's owner and notifications, a pipeline's
-- settings and time budget, WAITING jobs (a timer or a message), the mailbox, and the notifications
-- table. Never edit a migration that has shipped: add the next one.

-- The job row describes its current stage (DESIGN.md, rule 2); these are the new per-job columns.
-- notify is 0/1 (conveyor's bool columns); pipeline, inbox and stage_log hold msgspec JSON text.
ALTER TABLE conveyor_jobs ADD COLUMN owner TEXT;
ALTER TABLE conveyor_jobs ADD COLUMN notify INTEGER NOT NULL DEFAULT 0;
ALTER TABLE conveyor_jobs ADD COLUMN pipeline TEXT;
ALTER TABLE conveyor_jobs ADD COLUMN deadline REAL;
ALTER TABLE conveyor_jobs ADD COLUMN wait_until REAL;
ALTER TABLE conveyor_jobs ADD COLUMN waiting_for TEXT;
ALTER TABLE conveyor_jobs ADD COLUMN inbox TEXT;
ALTER TABLE conveyor_jobs ADD COLUMN stage_log TEXT NOT NULL DEFAULT '[]';

-- The leader's release of ended waits (queries.sql release_waits): WAITING jobs by when their timer
-- (or message time-out) ends, and by when their pipeline's budget runs out. Two partial indexes, one
-- probe each, rather than a scan of every job; only waiting jobs are in them.
CREATE INDEX IF NOT EXISTS conveyor_jobs_wait ON conveyor_jobs (wait_until) WHERE status = 'waiting';
CREATE INDEX IF NOT EXISTS conveyor_jobs_deadline ON conveyor_jobs (deadline) WHERE status = 'waiting';

-- A job's mailbox (app.send_message). A message id is unique per job: the primary key makes a repeat
-- (a sender's retry, two senders at once) a duplicate. payload is JSON text; consumed_at and stage say
-- which Message stage took it. The rowid keeps insertion order, the tie-break of `at`.
CREATE TABLE IF NOT EXISTS conveyor_messages (
    job_id      TEXT NOT NULL,
    id          TEXT NOT NULL,
    name        TEXT NOT NULL,
    payload     TEXT NOT NULL,
    at          REAL NOT NULL,
    consumed_at REAL,
    stage       INTEGER,
    PRIMARY KEY (job_id, id)
);

-- A job's oldest unconsumed message of a name: what a Message stage takes (take_message).
CREATE INDEX IF NOT EXISTS conveyor_messages_waiting
    ON conveyor_messages (job_id, name, at) WHERE consumed_at IS NULL;

-- Notes to jobs' owners, written by the outcome that finishes a job with notify. AUTOINCREMENT: an id
-- is never given again, so marking an old id read never touches a newer note. data is JSON text.
CREATE TABLE IF NOT EXISTS conveyor_notifications (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    owner     TEXT NOT NULL,
    job_id    TEXT NOT NULL,
    at        REAL NOT NULL,
    status    TEXT NOT NULL,
    exit_code INTEGER,
    data      TEXT NOT NULL,
    read      INTEGER NOT NULL DEFAULT 0
);

-- An owner's notifications, newest first.
CREATE INDEX IF NOT EXISTS conveyor_notifications_owner ON conveyor_notifications (owner, id);
