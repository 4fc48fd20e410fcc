-- Schema 9: batch rows in the event log (issue 10's cost bound; docs/events.md "How SQLite stores
-- events"). The hot path's steps (an enqueue, a claim, a batch of outcomes) write their events as one
-- row: `n` events numbered seq - n + 1 .. seq, their fields a JSON array in `data` (a NULL entry is an
-- event pruned with its job). A row of one event keeps `n` NULL, as every row written before.
-- Never edit a migration that has shipped: add the next one.
ALTER TABLE conveyor_events ADD COLUMN n INTEGER;

-- Where a job's entries in batch rows are: for each step that wrote one, the lowest number its row
-- can have (the log's next number when the step ran), space-separated. The job's history finds each
-- row from there (the first batch row at or after it that names the job) instead of an index entry
-- per event; prune finds the entries of the jobs it deletes the same way.
ALTER TABLE conveyor_jobs ADD COLUMN event_marks TEXT NOT NULL DEFAULT '';
