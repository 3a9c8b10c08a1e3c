-- name: list_queue
-- The dispatch queue within a scope: active incidents, most urgent first, then the
-- longest waiting; a page starts after the key (priority, opened_at, id) of the last.
-- The status test and ORDER BY match the partial index incidents_queue.
SELECT i.id, i.type, i.priority, i.status, c.path AS community, i.building, i.unit,
       i.device_id, i.opened_at, i.updated_at, i.event_count, e.ts AS first_event_ts,
       i.claimed_by, i.claimed_at, i.acknowledged_at, i.dispatched_to, i.dispatched_at,
       i.closed_at, i.outcome, i.escalation_level, i.escalated_at
FROM incidents i
JOIN communities c ON c.id = i.community_id
LEFT JOIN events e ON e.id = i.first_event_id
WHERE i.status NOT IN ('resolved', 'false_alarm')
  AND (%(scope)s::bigint[] IS NULL OR i.community_id = ANY(%(scope)s::bigint[]))
  AND (%(priority)s::smallint IS NULL OR i.priority = %(priority)s::smallint)
  AND (%(type)s::text IS NULL OR i.type = %(type)s::text)
  AND (%(device)s::text IS NULL OR i.device_id = %(device)s::text)
  AND (%(claimed_by)s::text IS NULL OR i.claimed_by = %(claimed_by)s::text)
  AND (%(opened_from)s::timestamptz IS NULL OR i.opened_at >= %(opened_from)s::timestamptz)
  AND (%(opened_to)s::timestamptz IS NULL OR i.opened_at < %(opened_to)s::timestamptz)
  AND (%(after_id)s::bigint IS NULL
       OR (i.priority, i.opened_at, i.id)
          > (%(after_priority)s::smallint, %(after_opened)s::timestamptz, %(after_id)s::bigint))
ORDER BY i.priority, i.opened_at, i.id
LIMIT %(limit)s

-- name: list_incidents
-- Incidents of one status within a scope, in queue order.
SELECT i.id, i.type, i.priority, i.status, c.path AS community, i.building, i.unit,
       i.device_id, i.opened_at, i.updated_at, i.event_count, e.ts AS first_event_ts,
       i.claimed_by, i.claimed_at, i.acknowledged_at, i.dispatched_to, i.dispatched_at,
       i.closed_at, i.outcome, i.escalation_level, i.escalated_at
FROM incidents i
JOIN communities c ON c.id = i.community_id
LEFT JOIN events e ON e.id = i.first_event_id
WHERE i.status = %(status)s::text
  AND (%(scope)s::bigint[] IS NULL OR i.community_id = ANY(%(scope)s::bigint[]))
  AND (%(priority)s::smallint IS NULL OR i.priority = %(priority)s::smallint)
  AND (%(type)s::text IS NULL OR i.type = %(type)s::text)
  AND (%(device)s::text IS NULL OR i.device_id = %(device)s::text)
  AND (%(claimed_by)s::text IS NULL OR i.claimed_by = %(claimed_by)s::text)
  AND (%(opened_from)s::timestamptz IS NULL OR i.opened_at >= %(opened_from)s::timestamptz)
  AND (%(opened_to)s::timestamptz IS NULL OR i.opened_at < %(opened_to)s::timestamptz)
  AND (%(after_id)s::bigint IS NULL
       OR (i.priority, i.opened_at, i.id)
          > (%(after_priority)s::smallint, %(after_opened)s::timestamptz, %(after_id)s::bigint))
ORDER BY i.priority, i.opened_at, i.id
LIMIT %(limit)s

-- name: get_incident
-- One incident, if it lies within the scope.
SELECT i.id, i.type, i.priority, i.status, c.path AS community, i.building, i.unit,
       i.device_id, i.opened_at, i.updated_at, i.event_count, e.ts AS first_event_ts,
       i.claimed_by, i.claimed_at, i.acknowledged_at, i.dispatched_to, i.dispatched_at,
       i.closed_at, i.outcome, i.escalation_level, i.escalated_at
FROM incidents i
JOIN communities c ON c.id = i.community_id
LEFT JOIN events e ON e.id = i.first_event_id
WHERE i.id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR i.community_id = ANY(%(scope)s::bigint[]))

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

-- name: incident_in_scope
-- Whether the incident exists within the scope: the queue's actions check it first.
SELECT EXISTS (
    SELECT 1 FROM incidents
    WHERE id = %(id)s
      AND (%(scope)s::bigint[] IS NULL OR community_id = ANY(%(scope)s::bigint[]))
)

-- name: live_incidents
-- The summaries of incidents the feed was notified of by id (a note, or a summary too
-- long for NOTIFY: migration 0020), each with its community's id for the streams'
-- scopes (whatever scope: each stream filters for itself).
SELECT anju_incident_summary(i) FROM incidents i
WHERE i.id = ANY(%(ids)s::bigint[])
ORDER BY i.id
