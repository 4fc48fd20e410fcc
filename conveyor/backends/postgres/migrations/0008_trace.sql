-- conveyor on PostgreSQL, schema version 8: a job's trace context (conveyor.tracing): the W3C context
-- (traceparent, tracestate) of the OpenTelemetry span that enqueued it, the carrier object as json, so
-- each run's span continues that trace. NULL when no span was active at the enqueue, as on every row
-- made before. No default: no table rewrite.
ALTER TABLE conveyor_jobs ADD COLUMN trace json;
