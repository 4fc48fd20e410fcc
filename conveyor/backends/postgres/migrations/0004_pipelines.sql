-- conveyor on PostgreSQL, schema version 4: pipelines (waits, the mailbox, owners' notifications).

-- A pipeline job's row describes its current stage (DESIGN.md, rule 2); these columns add what a
-- pipeline needs beside it. Constant defaults: no table rewrite, existing rows are plain jobs.
ALTER TABLE conveyor_jobs
    ADD COLUMN owner       text,                            -- the user the job belongs to
    ADD COLUMN notify      boolean NOT NULL DEFAULT false,  -- finishing writes a notification for owner
    ADD COLUMN pipeline    json,                            -- a pipeline's settings; NULL for a plain job
    ADD COLUMN deadline    double precision,                -- the pipeline's whole time budget ends here
    ADD COLUMN wait_until  double precision,                -- a WAITING job's timer (or message time-out)
    ADD COLUMN waiting_for text,                            -- a message wait: the name; NULL for a timer
    ADD COLUMN inbox       json,                            -- the message delivered to the current stage
    ADD COLUMN stage_log   json NOT NULL DEFAULT '[]';      -- per stage: status, times, attempts

-- release_waits: the waiting jobs whose wait (or budget) ends first. One expression index, as
-- least() skips a NULL (no timer, or no deadline); partial, so it holds only waiting jobs, and a
-- job that waits on a message with neither (NULL) is not in it at all.
CREATE INDEX conveyor_jobs_waits
    ON conveyor_jobs (least(wait_until, deadline)) WHERE status = 'waiting';

-- A job's mailbox. A message is kept until its job is deleted (prune, discard); one a Message
-- stage took is marked consumed, with that stage. The primary key makes a repeated message id a
-- duplicate, even between concurrent senders. seq: insertion order, the tie-break of `at`.
CREATE TABLE conveyor_messages (
    job_id      text NOT NULL,
    id          text NOT NULL,
    name        text NOT NULL,
    payload     json NOT NULL,
    at          double precision NOT NULL,
    consumed_at double precision,
    stage       integer,
    seq         bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (job_id, id)
);
-- A job's oldest message of a name not taken yet: what a Message stage takes.
CREATE INDEX conveyor_messages_waiting
    ON conveyor_messages (job_id, name, at, seq) WHERE consumed_at IS NULL;

-- Notes to jobs' owners, written by the outcome that finishes a job with notify; read newest
-- first by owner, pruned by age only (not with their jobs).
CREATE TABLE conveyor_notifications (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner     text NOT NULL,
    job_id    text NOT NULL,
    at        double precision NOT NULL,
    status    text NOT NULL,
    exit_code integer,
    data      json NOT NULL,
    read      boolean NOT NULL DEFAULT false
);
CREATE INDEX conveyor_notifications_owner ON conveyor_notifications (owner, id);
-- prune_notifications: rows are appended in time order, so a BRIN index finds the old ones (as the events').
CREATE INDEX conveyor_notifications_at ON conveyor_notifications USING brin (at);
