-- Schema 1: the schema of every file made before numbered migrations (conveyor 0.1.0, which
-- shipped it as backends/sqlite_schema.sql). Files made by that release hold exactly this and say
-- schema_version '1' in conveyor_meta, so they upgrade from here. Never edit a migration that has
-- shipped: add the next one.

-- conveyor's embedded store. Times are Unix seconds (REAL); JSON columns hold msgspec JSON.
-- A scheduled job is stored as 'queued' with scheduled_at in the future.
CREATE TABLE IF NOT EXISTS conveyor_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS conveyor_jobs (
    seq              INTEGER PRIMARY KEY,  -- insertion order (the rowid): FIFO tie-break
    id               TEXT NOT NULL UNIQUE,
    task             TEXT NOT NULL,
    queue            TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    args             TEXT NOT NULL,
    kwargs           TEXT NOT NULL,
    status           TEXT NOT NULL,
    created_at       REAL NOT NULL,
    scheduled_at     REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    retries          INTEGER NOT NULL DEFAULT 0,
    max_retries      INTEGER NOT NULL DEFAULT 0,
    timeout          REAL,
    result           TEXT,
    error            TEXT,
    exit_code        INTEGER,
    progress         REAL NOT NULL DEFAULT 0,
    progress_message TEXT NOT NULL DEFAULT '',
    worker_id        TEXT,
    token            TEXT,
    lease_expires_at REAL,
    key              TEXT,
    result_ttl       REAL,
    expires_at       REAL,
    stage            INTEGER NOT NULL DEFAULT 0,
    stages           TEXT,
    results          TEXT NOT NULL DEFAULT '[]'
);

-- The claim: due jobs of a queue by priority, then due time, then insertion.
CREATE INDEX IF NOT EXISTS conveyor_jobs_claim
    ON conveyor_jobs (queue, priority DESC, scheduled_at, seq) WHERE status = 'queued';
-- The rescue of expired leases.
CREATE INDEX IF NOT EXISTS conveyor_jobs_lease
    ON conveyor_jobs (lease_expires_at) WHERE status = 'running';
-- Pruning of finished jobs.
CREATE INDEX IF NOT EXISTS conveyor_jobs_expiry
    ON conveyor_jobs (expires_at) WHERE expires_at IS NOT NULL;
-- A key is unique among jobs that have not finished.
CREATE UNIQUE INDEX IF NOT EXISTS conveyor_jobs_key
    ON conveyor_jobs (key) WHERE key IS NOT NULL AND status IN ('queued', 'running', 'waiting');

CREATE TABLE IF NOT EXISTS conveyor_locks (
    name       TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_at REAL NOT NULL
);

INSERT OR IGNORE INTO conveyor_meta (name, value) VALUES ('schema_version', '1');
