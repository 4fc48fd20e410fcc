-- Schema 8: a job's trace context (conveyor.tracing, docs/guide.md "Tracing"): the W3C context
-- (traceparent, tracestate) of the OpenTelemetry span that enqueued it, as JSON text of the carrier
-- object, so each run's span continues that trace. NULL when no span was active at the enqueue, as on
-- every row made before. Never edit a migration that has shipped: add the next one.
ALTER TABLE conveyor_jobs ADD COLUMN trace TEXT;
