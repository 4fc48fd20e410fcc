-- conveyor on PostgreSQL, schema version 6: long-running services (conveyor.service_types).

-- One row per replica of a service instance (conveyor.service_types.ServiceRecord). What is wanted:
-- `wanted` (running or stopped) and `generation` (bumped by a restart or a reload); what is so: `status`
-- (a ServiceStatus value), the worker holding it, its fencing `token`, its `lease_until` (renewed by the
-- worker's keeper; past it, any worker serving the queue may take the row over) and the `run_generation`
-- it runs. `source` is a ServiceSource value; a LOCAL instance names in `local_to` the only worker that
-- may take it. `crashes` is the JSON list of the recent crash times, `last_error` the last crash's
-- {type, message, traceback}. The tables are tiny (tens of rows): the primary key and the token's index
-- are all the statements need (postgres/queries.sql, "Services").
CREATE TABLE conveyor_services (
    name           text NOT NULL,                   -- the instance
    replica        integer NOT NULL,                -- 0 .. replicas - 1
    service        text NOT NULL,                   -- the @app.service it runs
    queue          text NOT NULL,                   -- workers serving it run it
    params         jsonb NOT NULL DEFAULT '{}',     -- the function's keyword arguments
    source         text NOT NULL,
    local_to       text,
    wanted         boolean NOT NULL,
    generation     integer NOT NULL DEFAULT 0,
    status         text NOT NULL,
    worker_id      text,                            -- the holder (held), else who held it last
    token          text,                            -- the current run's fencing token (held only)
    lease_until    double precision,
    run_generation integer,
    started_at     double precision,                -- when the current (or last) run's function started
    free_since     double precision,                -- when it was last let go: spreading waits on it
    not_before     double precision NOT NULL DEFAULT 0,  -- PENDING: not taken before (a crash's back-off)
    restarts       integer NOT NULL DEFAULT 0,
    crashes        jsonb NOT NULL DEFAULT '[]',
    last_error     jsonb,
    created_at     double precision NOT NULL,
    updated_at     double precision NOT NULL,
    PRIMARY KEY (name, replica)
);

-- A run's steps (renew_services, service_running, end_service_run) find their row by its token, and a
-- token is never current on two rows.
CREATE UNIQUE INDEX conveyor_services_token ON conveyor_services (token) WHERE token IS NOT NULL;
