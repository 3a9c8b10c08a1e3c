-- name: enqueue_incident_webhooks
-- One delivery per active subscription of the incident's community or any ancestor of
-- it whose filters let the event through, written in the caller's transaction. The
-- payload follows the Standard Webhooks shape (type, timestamp, data) and carries the
-- incident's reference and location only: never names or health data.
WITH RECURSIVE place AS (
    SELECT c.id, c.parent_id FROM communities c
    JOIN incidents i ON i.community_id = c.id
    WHERE i.id = %(incident_id)s
    UNION ALL
    SELECT c.id, c.parent_id FROM communities c JOIN place p ON c.id = p.parent_id
),
incident AS (
    SELECT i.id, i.type, i.priority, i.status, i.building, i.unit, c.path AS community
    FROM incidents i JOIN communities c ON c.id = i.community_id
    WHERE i.id = %(incident_id)s
)
INSERT INTO webhook_deliveries (message_id, subscription_id, incident_id, event_type, payload)
SELECT
    'msg_' || replace(gen_random_uuid()::text, '-', ''),
    s.id,
    incident.id,
    %(event_type)s::text,
    jsonb_build_object(
        'type', %(event_type)s::text,
        'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', jsonb_build_object(
            'incident_id', incident.id,
            'incident_type', incident.type,
            'priority', incident.priority,
            'status', incident.status,
            'location', jsonb_build_object(
                'community', incident.community,
                'building', incident.building,
                'unit', incident.unit
            )
        )
    )
FROM webhook_subscriptions s, incident
WHERE s.status = 'active'
  AND s.community_id IN (SELECT id FROM place)
  AND (cardinality(s.event_types) = 0 OR %(event_type)s::text = ANY (s.event_types))
  AND (cardinality(s.incident_types) = 0 OR incident.type = ANY (s.incident_types))
  AND incident.priority <= s.max_priority
