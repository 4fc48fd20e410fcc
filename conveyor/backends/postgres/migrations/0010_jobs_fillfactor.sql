-- conveyor on PostgreSQL, schema version 10: conveyor_jobs leaves a tenth of each page free.
-- A job's row is rewritten by its claim and again by its outcome; with pages packed full (the
-- default, and what a bulk COPY writes) each new version goes to another page, and a batch of
-- outcomes touches twice the pages it would. Measured on the store alone (bench_event_cost.py
-- --postgres, 20,000 jobs): a batch of successes took a third less time at fillfactor 90; 70 was
-- no better. Pages written from now on; existing ones keep their layout until rewritten.
ALTER TABLE conveyor_jobs SET (fillfactor = 90);
