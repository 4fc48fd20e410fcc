-- conveyor on PostgreSQL, schema version 7: accounts (the HTTP API's users, their tokens and the audit
-- log of changes made through it), and an owner on schedules and services, as jobs have one since 4.

-- A user (conveyor.accounts.User); permissions is the array of Permission values, sorted.
CREATE TABLE conveyor_users (
    name        text PRIMARY KEY,
    permissions jsonb NOT NULL DEFAULT '[]',
    created_at  double precision NOT NULL
);

-- A user's API token (conveyor.accounts.TokenRecord), found by its id, which the presented token
-- carries; digest is the SHA-256 (hex) of its secret, never the secret. user_name, not `user` (a
-- reserved word): the user, with no foreign key, as on SQLite: add_token checks the user under a key
-- share lock (a concurrent remove_user waits, or goes first and the token is refused), remove_user
-- deletes the user's tokens in its transaction. last_used_at is written at most once a minute
-- (get_token); revoked_at: revoked, kept for the record.
CREATE TABLE conveyor_tokens (
    id           text PRIMARY KEY,
    user_name    text NOT NULL,
    label        text NOT NULL DEFAULT '',
    digest       text NOT NULL,
    created_at   double precision NOT NULL,
    last_used_at double precision,
    revoked_at   double precision
);

-- A user's tokens, newest first (list_tokens), and remove_user's delete of them.
CREATE INDEX conveyor_tokens_user ON conveyor_tokens (user_name, created_at);

-- The audit log (conveyor.accounts.AuditEntry): one row per change made through the API. Entries are
-- appended one at a time under an advisory lock held to commit (queries.sql: audit_lock), so they
-- commit in seq order and a reader paging with `after` never skips one committed late.
CREATE TABLE conveyor_audit (
    seq       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at        double precision NOT NULL,
    user_name text NOT NULL,
    action    text NOT NULL,
    target    text,
    data      json NOT NULL DEFAULT '{}'
);

-- One user's entries in order (audit_log with a user).
CREATE INDEX conveyor_audit_user ON conveyor_audit (user_name, seq);

-- The user a schedule or a service instance belongs to (NULL: nobody's, as every row made before). No
-- default: no table rewrite.
ALTER TABLE conveyor_schedules ADD COLUMN owner text;
ALTER TABLE conveyor_services ADD COLUMN owner text;

-- A user's jobs, newest first (list_owned_jobs: a web user without view-others lists only theirs).
-- Partial: jobs of nobody's (plain task calls, the hot path's inserts) cost it nothing.
CREATE INDEX conveyor_jobs_owner ON conveyor_jobs (owner, seq) WHERE owner IS NOT NULL;
