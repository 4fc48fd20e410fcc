-- Schema 2: count the runs a job lost because its worker died (its lease ran out), so the leader
-- can fail a poison job after App(max_rescues=) of them instead of rescuing it forever.
-- Existing rows start at 0: a file upgraded from schema 1 has no record of earlier rescues.
ALTER TABLE conveyor_jobs ADD COLUMN rescues INTEGER NOT NULL DEFAULT 0;
