-- conveyor on PostgreSQL, schema version 9: batch rows in the event log (issue 10's cost bound;
-- docs/postgres.md "The event log"). The hot path's steps (a bulk enqueue, a claim, a batch of
-- successes) write their events as one row each (an enqueue, one per 100 jobs): `n` events, numbered
-- by the sequencer seq - n + 1 .. seq, each named in `data` by its job's seq (the format:
-- conveyor/backends/event_batches.py). A row of one event keeps `n` NULL, as every row written before.
-- Never edit a migration that has shipped: add the next one.
ALTER TABLE conveyor_events ADD COLUMN n integer;

-- A job's batch rows, by id (conveyor_events.id, reserved by the step before it writes the row): its
-- history reads them by primary key instead of an index entry per event. No table rewrite: a
-- constant default.
ALTER TABLE conveyor_jobs ADD COLUMN event_rows bigint[] NOT NULL DEFAULT '{}';

-- On a `discarded` event only (the job's row goes): the job's seq and batch rows, so its entries in
-- batch rows still resolve to it and its history is still found, until event_ttl takes the event.
ALTER TABLE conveyor_events ADD COLUMN job_seq bigint;
ALTER TABLE conveyor_events ADD COLUMN job_rows bigint[];
CREATE INDEX conveyor_events_job_seq ON conveyor_events (job_seq) WHERE job_seq IS NOT NULL;
