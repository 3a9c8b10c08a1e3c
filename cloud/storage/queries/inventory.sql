-- Gateways, devices and the events they reported, as the API reads them. A device's
-- community is its gateway's, and so is an event's (events.gateway_id); every query
-- takes the caller's %(scope)s (community-node ids, NULL for the whole tree) and reads
-- nothing outside it.

-- name: inventory_gateway_list
-- Gateways in a scope by id; a page starts after the id %(after)s.
SELECT g.id, c.path AS community, g.status, g.last_seen, g.created_at,
       (SELECT count(*) FROM devices d WHERE d.gateway_id = g.id) AS device_count,
       g.auth, g.credentials_issued_at, g.config_version, g.config_applied
FROM gateways g
JOIN communities c ON c.id = g.community_id
WHERE (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))
  AND (%(status)s::text IS NULL OR g.status = %(status)s::text)
  AND (%(after)s::text IS NULL OR g.id > %(after)s::text)
ORDER BY g.id
LIMIT %(limit)s

-- name: inventory_gateway_get
SELECT g.id, c.path AS community, g.status, g.last_seen, g.created_at,
       (SELECT count(*) FROM devices d WHERE d.gateway_id = g.id) AS device_count,
       g.auth, g.credentials_issued_at, g.config_version, g.config_applied
FROM gateways g
JOIN communities c ON c.id = g.community_id
WHERE g.id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))

-- name: inventory_device_list
-- Devices behind the gateways of a scope by id; a page starts after the id %(after)s.
SELECT d.id, d.gateway_id, c.path AS community, d.kind, d.profile_id, d.building, d.unit,
       d.status, d.last_seen, d.created_at, d.updated_at, d.address, d.egress,
       d.poll_interval_s, d.resident_id
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
JOIN communities c ON c.id = g.community_id
WHERE (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))
  AND (%(gateway)s::text IS NULL OR d.gateway_id = %(gateway)s::text)
  AND (%(kind)s::text IS NULL OR d.kind = %(kind)s::text)
  AND (%(status)s::text IS NULL OR d.status = %(status)s::text)
  AND (%(after)s::text IS NULL OR d.id > %(after)s::text)
ORDER BY d.id
LIMIT %(limit)s

-- name: inventory_device_get
SELECT d.id, d.gateway_id, c.path AS community, d.kind, d.profile_id, d.building, d.unit,
       d.status, d.last_seen, d.created_at, d.updated_at, d.address, d.egress,
       d.poll_interval_s, d.resident_id
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
JOIN communities c ON c.id = g.community_id
WHERE d.id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))

-- name: inventory_gateway_config
-- The config the cloud wants a gateway to run, what it runs, and the document of the
-- wanted version (NULL while the version is 0: nothing was ever pushed).
SELECT g.id AS gateway, g.config_version AS version, g.config_applied AS applied_version,
       g.config_applied_at AS applied_at, g.config_pushed_at AS pushed_at,
       g.config_error AS error, gc.document
FROM gateways g
LEFT JOIN gateway_configs gc ON gc.gateway_id = g.id AND gc.version = g.config_version
WHERE g.id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))

-- name: inventory_event_list
-- Events of the whole tree (the scope NULL) in [start, end), newest first; a page
-- starts after the key (ts, id) of the last. Reads events_ts backwards, or
-- events_device_ts / events_gateway_ts with a device or gateway filter.
SELECT e.id, e.ts, e.received_at, e.device_id, e.gateway_id, c.path AS community, e.seq,
       e.type, e.severity, e.data
FROM events e
JOIN gateways g ON g.id = e.gateway_id
JOIN communities c ON c.id = g.community_id
WHERE (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))
  AND (%(device)s::text IS NULL OR e.device_id = %(device)s::text)
  AND (%(gateway)s::text IS NULL OR e.gateway_id = %(gateway)s::text)
  AND (%(type)s::text IS NULL OR e.type = %(type)s::text)
  AND (%(severity)s::text IS NULL OR e.severity = %(severity)s::text)
  AND (%(start)s::timestamptz IS NULL OR e.ts >= %(start)s::timestamptz)
  AND (%(end)s::timestamptz IS NULL OR e.ts < %(end)s::timestamptz)
  AND (%(after_id)s::bigint IS NULL
       OR (e.ts, e.id) < (%(after_ts)s::timestamptz, %(after_id)s::bigint))
ORDER BY e.ts DESC, e.id DESC
LIMIT %(limit)s

-- name: inventory_event_list_scoped
-- inventory_event_list within a scope: the newest page of each gateway of the scope
-- (a range of events_gateway_ts), merged. Walking events_ts instead would read every
-- other community's events to find a quiet community's, the whole table at worst.
SELECT e.id, e.ts, e.received_at, e.device_id, e.gateway_id, c.path AS community, e.seq,
       e.type, e.severity, e.data
FROM gateways g
JOIN communities c ON c.id = g.community_id
CROSS JOIN LATERAL (
    SELECT e.id, e.ts, e.received_at, e.device_id, e.gateway_id, e.seq, e.type,
           e.severity, e.data
    FROM events e
    WHERE e.gateway_id = g.id
      AND (%(device)s::text IS NULL OR e.device_id = %(device)s::text)
      AND (%(type)s::text IS NULL OR e.type = %(type)s::text)
      AND (%(severity)s::text IS NULL OR e.severity = %(severity)s::text)
      AND (%(start)s::timestamptz IS NULL OR e.ts >= %(start)s::timestamptz)
      AND (%(end)s::timestamptz IS NULL OR e.ts < %(end)s::timestamptz)
      AND (%(after_id)s::bigint IS NULL
           OR (e.ts, e.id) < (%(after_ts)s::timestamptz, %(after_id)s::bigint))
    ORDER BY e.ts DESC, e.id DESC
    LIMIT %(limit)s
) e
WHERE (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))
  AND (%(gateway)s::text IS NULL OR g.id = %(gateway)s::text)
ORDER BY e.ts DESC, e.id DESC
LIMIT %(limit)s

-- name: inventory_event_get
SELECT e.id, e.ts, e.received_at, e.device_id, e.gateway_id, c.path AS community, e.seq,
       e.type, e.severity, e.data
FROM events e
JOIN gateways g ON g.id = e.gateway_id
JOIN communities c ON c.id = g.community_id
WHERE e.id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))

-- name: inventory_incident_events
-- The events that opened and joined an incident within the scope, oldest first.
SELECT e.id, e.ts, e.received_at, e.device_id, e.gateway_id, c.path AS community, e.seq,
       e.type, e.severity, e.data
FROM incident_events ie
JOIN incidents i ON i.id = ie.incident_id
JOIN events e ON e.id = ie.event_id
JOIN gateways g ON g.id = e.gateway_id
JOIN communities c ON c.id = g.community_id
WHERE ie.incident_id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR i.community_id = ANY(%(scope)s::bigint[]))
ORDER BY e.ts, e.id
LIMIT %(limit)s
