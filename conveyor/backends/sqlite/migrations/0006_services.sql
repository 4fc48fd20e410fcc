-- Schema 6: long-running services (issue 13, docs/services.md): one row per replica of a service
-- instance, held by a worker with a lease and a fencing token per run, like a job's run. Never edit a
-- migration that has shipped: add the next one.

-- One row per replica (conveyor.service_types.ServiceRecord). What is wanted: wanted 0/1 and the
-- generation a restart or a reload bumps. What is so: status (ServiceStatus), and while a worker holds
-- the row (starting, running, stopping) its worker_id, token and lease_until, and the run_generation it
-- runs. params is JSON text (an object), crashes a JSON array of times, last_error JSON text
-- ({type, message, traceback}) or NULL. source is a ServiceSource; local_to the one worker allowed to
-- take a LOCAL instance. free_since: when the row was last let go (claim_services spreads replicas on it).
-- Tens of rows: the primary key is the only index the steps need, besides the tokens' uniqueness.
CREATE TABLE IF NOT EXISTS conveyor_services (
    name           TEXT NOT NULL,
    replica        INTEGER NOT NULL,
    service        TEXT NOT NULL,
    queue          TEXT NOT NULL,
    params         TEXT NOT NULL DEFAULT '{}',
    source         TEXT NOT NULL,
    local_to       TEXT,
    wanted         INTEGER NOT NULL,
    generation     INTEGER NOT NULL DEFAULT 0,
    status         TEXT NOT NULL,
    worker_id      TEXT,
    token          TEXT,
    lease_until    REAL,
    run_generation INTEGER,
    started_at     REAL,
    free_since     REAL,
    not_before     REAL NOT NULL DEFAULT 0,
    restarts       INTEGER NOT NULL DEFAULT 0,
    crashes        TEXT NOT NULL DEFAULT '[]',
    last_error     TEXT,
    created_at     REAL NOT NULL,
    updated_at     REAL NOT NULL,
    PRIMARY KEY (name, replica)
);

-- A run's fencing token is never given to two rows (it is a fresh uuid4 per claim); only held rows have one.
CREATE UNIQUE INDEX IF NOT EXISTS conveyor_services_token ON conveyor_services (token) WHERE token IS NOT NULL;
