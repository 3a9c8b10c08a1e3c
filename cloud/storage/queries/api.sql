-- name: list_queue
-- The dispatch queue: active incidents, most urgent first, then the longest waiting.
-- The WHERE and ORDER BY match the partial index incidents_queue (priority, opened_at).
SELECT i.id, i.type, i.priority, i.status, c.path AS community, i.building, i.unit,
       i.device_id, i.opened_at, i.updated_at, i.event_count, e.ts AS first_event_ts,
       i.claimed_by, i.claimed_at, i.acknowledged_at, i.dispatched_to, i.dispatched_at,
       i.closed_at, i.outcome, i.escalation_level, i.escalated_at
FROM incidents i
JOIN communities c ON c.id = i.community_id
LEFT JOIN events e ON e.id = i.first_event_id
WHERE i.status NOT IN ('resolved', 'false_alarm')
ORDER BY i.priority, i.opened_at, i.id
LIMIT %(limit)s

-- name: list_incidents
-- Incidents of one status, in queue order.
SELECT i.id, i.type, i.priority, i.status, c.path AS community, i.building, i.unit,
       i.device_id, i.opened_at, i.updated_at, i.event_count, e.ts AS first_event_ts,
       i.claimed_by, i.claimed_at, i.acknowledged_at, i.dispatched_to, i.dispatched_at,
       i.closed_at, i.outcome, i.escalation_level, i.escalated_at
FROM incidents i
JOIN communities c ON c.id = i.community_id
LEFT JOIN events e ON e.id = i.first_event_id
WHERE i.status = %(status)s::text
ORDER BY i.priority, i.opened_at, i.id
LIMIT %(limit)s

-- name: get_incident
SELECT i.id, i.type, i.priority, i.status, c.path AS community, i.building, i.unit,
       i.device_id, i.opened_at, i.updated_at, i.event_count, e.ts AS first_event_ts,
       i.claimed_by, i.claimed_at, i.acknowledged_at, i.dispatched_to, i.dispatched_at,
       i.closed_at, i.outcome, i.escalation_level, i.escalated_at
FROM incidents i
JOIN communities c ON c.id = i.community_id
LEFT JOIN events e ON e.id = i.first_event_id
WHERE i.id = %(id)s

-- name: incident_log
SELECT at, from_status, to_status, actor, note
FROM incident_log
WHERE incident_id = %(id)s
ORDER BY at, id

-- name: incident_notes
SELECT id, at, author, text
FROM incident_notes
WHERE incident_id = %(id)s
ORDER BY at, id

-- name: ping
SELECT 1
