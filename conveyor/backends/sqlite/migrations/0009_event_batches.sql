-- Schema 9: batch rows in the event log (issue 10's cost bound; docs/events.md "How SQLite stores
-- events"). The hot path's steps (an enqueue, a claim, a batch of outcomes) write their events as rows
-- of up to 100: `n` events numbered seq - n + 1 .. seq, each named in `data` by its job's seq
-- (conveyor/backends/event_batches.py has the format). A row of one event keeps `n` NULL, as every
-- row written before. Never edit a migration that has shipped: add the next one.
ALTER TABLE conveyor_events ADD COLUMN n INTEGER;

-- Where a job's entries in batch rows are: for each step that wrote one, the lowest number its row
-- can have (the log's next number when the step ran), space-separated. The job's history finds each
-- row from there (the first batch row at or after it that names the job) instead of an index entry
-- per event, and the first mark tells a reader whether a batch row was written after the job existed.
ALTER TABLE conveyor_jobs ADD COLUMN event_marks TEXT NOT NULL DEFAULT '';
