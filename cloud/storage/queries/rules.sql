-- name: events_in_window
-- Events of one type at one device in (since, until], this transaction's included.
SELECT count(*) FROM events
WHERE device_id = %(device)s AND type = %(type)s AND ts > %(since)s AND ts <= %(until)s

-- name: door_traffic
-- People a door's cameras saw cross its line, and access grants of the door, in
-- (since, until]. A crossing event's count defaults to one person.
SELECT
    (SELECT coalesce(sum(coalesce((data ->> 'count')::integer, 1)), 0) FROM events
     WHERE type = 'camera.line_crossing' AND data ->> 'door' = %(door)s
       AND ts > %(since)s AND ts <= %(until)s) AS crossings,
    (SELECT count(*) FROM events
     WHERE device_id = %(door)s AND type = 'access.granted'
       AND ts > %(since)s AND ts <= %(until)s) AS grants

-- name: residents_at_home
-- Active residents of one home.
SELECT id FROM residents
WHERE community_id = %(community_id)s AND building = %(building)s AND unit = %(unit)s
  AND status = 'active'
ORDER BY id

-- name: residents_needing_evacuation_help
-- Active residents of a building who need help to leave it.
SELECT id, unit FROM residents
WHERE community_id = %(community_id)s AND building = %(building)s
  AND needs_evacuation_help AND status = 'active'
ORDER BY id

-- name: silent_devices
-- Active devices of a kind, seen once and silent since before `since`, that have no
-- active incident of the rule's type yet, with what an incident needs to know.
SELECT d.id, d.kind, g.community_id, c.path, d.building, d.unit, d.last_seen
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
JOIN communities c ON c.id = g.community_id
WHERE d.kind = %(kind)s AND d.status = 'active' AND d.last_seen < %(since)s
  AND NOT EXISTS (
      SELECT 1 FROM incidents i
      WHERE i.device_id = d.id AND i.type = %(incident)s
        AND i.status NOT IN ('resolved', 'false_alarm'))
ORDER BY d.id

-- name: silent_gateways
SELECT g.id, g.community_id, c.path, g.last_seen
FROM gateways g
JOIN communities c ON c.id = g.community_id
WHERE g.status = 'active' AND g.last_seen < %(since)s
  AND NOT EXISTS (
      SELECT 1 FROM incidents i
      WHERE i.device_id = g.id AND i.type = %(incident)s
        AND i.status NOT IN ('resolved', 'false_alarm'))
ORDER BY g.id
