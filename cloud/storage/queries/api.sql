-- name: list_incidents
-- The dispatch queue: most urgent first, then oldest.
SELECT i.id, i.type, i.priority, i.status, c.path AS community, i.building, i.unit,
       i.device_id, i.opened_at, i.updated_at, i.event_count, e.ts AS first_event_ts
FROM incidents i
JOIN communities c ON c.id = i.community_id
LEFT JOIN events e ON e.id = i.first_event_id
WHERE %(status)s::text IS NULL OR i.status = %(status)s::text
ORDER BY i.priority, i.opened_at, i.id
LIMIT %(limit)s

-- name: get_incident
SELECT i.id, i.type, i.priority, i.status, c.path AS community, i.building, i.unit,
       i.device_id, i.opened_at, i.updated_at, i.event_count, e.ts AS first_event_ts
FROM incidents i
JOIN communities c ON c.id = i.community_id
LEFT JOIN events e ON e.id = i.first_event_id
WHERE i.id = %(id)s

-- name: incident_log
SELECT at, from_status, to_status, actor, note
FROM incident_log
WHERE incident_id = %(id)s
ORDER BY at, id

-- name: ping
SELECT 1
