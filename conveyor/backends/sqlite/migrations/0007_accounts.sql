-- Schema 7: accounts (issue 14, docs/web.md): the HTTP API's users, their tokens and the audit log of
-- changes made through it; an owner on schedules and services, as jobs have one since schema 4. Never edit
-- a migration that has shipped: add the next one.

-- A user (conveyor.accounts.User). permissions is a JSON array of Permission values, sorted.
CREATE TABLE IF NOT EXISTS conveyor_users (
    name        TEXT PRIMARY KEY,
    permissions TEXT NOT NULL DEFAULT '[]',
    created_at  REAL NOT NULL
);

-- A user's API token (conveyor.accounts.TokenRecord): found by its id, which the presented token
-- carries; digest is the SHA-256 (hex) of its secret, never the secret. user_name names the user (not
-- `user`: a reserved word of PostgreSQL, and both dialects name it alike); no foreign key (SQLite
-- enforces none unless each connection asks): add_token checks the user and remove_user deletes the
-- user's tokens, each in its write transaction. last_used_at is written at most once a minute
-- (get_token); revoked_at: revoked, kept for the record.
CREATE TABLE IF NOT EXISTS conveyor_tokens (
    id           TEXT PRIMARY KEY,
    user_name    TEXT NOT NULL,
    label        TEXT NOT NULL DEFAULT '',
    digest       TEXT NOT NULL,
    created_at   REAL NOT NULL,
    last_used_at REAL,
    revoked_at   REAL
);

-- remove_user's delete of a user's tokens (delete_user_tokens).
CREATE INDEX IF NOT EXISTS conveyor_tokens_user ON conveyor_tokens (user_name);

-- The audit log (conveyor.accounts.AuditEntry): one row per change made through the API. AUTOINCREMENT:
-- a seq is never given out twice, even after the newest rows are deleted (destroy_all). Writers are
-- serial, so entries commit in seq order: a reader paging with `after` never skips one. data is JSON
-- text (an object).
CREATE TABLE IF NOT EXISTS conveyor_audit (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    at        REAL NOT NULL,
    user_name TEXT NOT NULL,
    action    TEXT NOT NULL,
    target    TEXT,
    data      TEXT NOT NULL DEFAULT '{}'
);

-- The user a schedule or a service instance belongs to (NULL: nobody's, as every row made before).
ALTER TABLE conveyor_schedules ADD COLUMN owner TEXT;
ALTER TABLE conveyor_services ADD COLUMN owner TEXT;

-- A user's jobs, newest first (list_owned_jobs: a web user without view-others lists only theirs); the
-- index carries the rowid, seq. Partial: jobs of nobody's (plain task calls) cost it nothing.
CREATE INDEX IF NOT EXISTS conveyor_jobs_owner ON conveyor_jobs (owner) WHERE owner IS NOT NULL;
