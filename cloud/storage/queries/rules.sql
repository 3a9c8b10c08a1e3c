-- name: burst_around
-- The most events of one type at one device that fit in one window of `within`
-- holding the event at `at`: windows start at each event in [at - within, at] and
-- reach `within` ahead, so an event arriving late completes a burst as well as one
-- arriving last. This transaction's events are included.
SELECT coalesce(max(n), 0) FROM (
    SELECT ts, count(*) OVER (ORDER BY ts RANGE BETWEEN CURRENT ROW AND %(within)s FOLLOWING) AS n
    FROM events
    WHERE device_id = %(device)s AND type = %(type)s
      AND ts >= %(at)s - %(within)s AND ts <= %(at)s + %(within)s
) AS windows
WHERE ts <= %(at)s

-- name: door_traffic
-- People a door's cameras saw cross its line inward, and access grants of the door,
-- in (since, until]. A crossing event's count defaults to one person; one without a
-- direction (a box older than data.direction) counts as inward, and people walking
-- out need no grant.
SELECT
    (SELECT coalesce(sum(coalesce((data ->> 'count')::bigint, 1)), 0) FROM events
     WHERE type = 'camera.line_crossing' AND data ->> 'door' = %(door)s
       AND coalesce(data ->> 'direction', 'in') = 'in'
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
-- Active devices of a kind, seen once and silent since before `since`, with no
-- incident of the rule's type opened since they fell silent (one per silence, even
-- once a dispatcher closed it), behind an active gateway that is itself heard from
-- (a silent gateway is one incident, not one per device behind it).
SELECT d.id, d.kind, g.community_id, c.path, d.building, d.unit, d.last_seen
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
JOIN communities c ON c.id = g.community_id
WHERE d.kind = %(kind)s AND d.status = 'active' AND d.last_seen < %(since)s
  AND g.status = 'active' AND g.last_seen >= %(since)s
  AND NOT EXISTS (
      SELECT 1 FROM incidents i
      WHERE i.device_id = d.id AND i.type = %(incident)s AND i.opened_at > d.last_seen)
ORDER BY d.id
LIMIT %(limit)s

-- name: silent_gateways
-- Active gateways silent since before `since`, once per silence.
SELECT g.id, g.community_id, c.path, g.last_seen
FROM gateways g
JOIN communities c ON c.id = g.community_id
WHERE g.status = 'active' AND g.last_seen < %(since)s
  AND NOT EXISTS (
      SELECT 1 FROM incidents i
      WHERE i.device_id = g.id AND i.type = %(incident)s AND i.opened_at > g.last_seen)
ORDER BY g.id
LIMIT %(limit)s
