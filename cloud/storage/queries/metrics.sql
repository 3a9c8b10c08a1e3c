-- name: metrics_statement_timeout
-- Bounds each of the scrape's statements, so a slow database answers a scrape with
-- database_up 0 instead of holding a pooled connection; for this transaction only.
SELECT set_config('statement_timeout', %(timeout_ms)s::text, true)

-- name: metrics_open_incidents
-- Active incidents by priority and status, and when the oldest of each was opened (in
-- seconds before now). The WHERE matches the partial index incidents_queue, so this
-- reads the active incidents only, never the closed history.
SELECT priority, status, count(*) AS incidents,
       extract(epoch FROM now() - min(opened_at))::float8 AS oldest_age_s
FROM incidents
WHERE status NOT IN ('resolved', 'false_alarm')
GROUP BY priority, status

-- name: metrics_escalations
-- Escalations ever logged: the escalation worker logs each one with its actor and the
-- status unchanged. A dispatcher's change moves the status, so one who calls themself
-- %(actor)s is not counted. Log rows are never deleted, so this never decreases.
SELECT count(*) FROM incident_log
WHERE actor = %(actor)s AND from_status = to_status

-- name: metrics_webhook_deliveries
-- Deliveries waiting to be sent and dead letters; each count reads its partial index
-- (webhook_deliveries_due, webhook_deliveries_dead), not the delivered history.
SELECT (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending') AS pending,
       (SELECT count(*) FROM webhook_deliveries WHERE status = 'dead') AS dead

-- name: metrics_gateways_config_behind
-- Active gateways that do not run the device config the cloud wants them to and have
-- not refused it: the pusher's backlog (offline gateways, answers still to come). The
-- condition is that of the partial index gateways_config_due, plus the refusal.
SELECT count(*) FROM gateways
WHERE config_version > config_applied
  AND config_version > config_refused
  AND status = 'active'
