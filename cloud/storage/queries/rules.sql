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

-- name: record_rule_check
-- A windowed rule's check of an event stored in this transaction, found by what the
-- wire says of it (the newest such row, should a copy from another batch exist),
-- due `lateness` after the end of the window that may still gain events, or after
-- now when that end has passed (a backlog arriving late). Returns nothing when the
-- event is not stored.
INSERT INTO rule_checks (rule, event_id, due_at)
SELECT %(rule)s, id, GREATEST(%(window_end)s::timestamptz, now()) + %(lateness)s::interval
FROM events
WHERE device_id = %(device)s AND type = %(type)s AND ts = %(ts)s AND seq = %(seq)s
ORDER BY id DESC
LIMIT 1
RETURNING id

-- name: take_due_rule_checks
-- Due checks with what the rules need of their events, the checks' rows locked; rows
-- another checker holds are skipped, so no check is judged twice and nobody waits.
-- now() is the transaction's start: a check is never judged before it is due.
SELECT c.id, c.rule, c.event_id, e.ts, e.type, e.data ->> 'door', e.device_id
FROM rule_checks c
JOIN events e ON e.id = c.event_id
WHERE c.due_at <= now()
ORDER BY c.due_at
LIMIT %(limit)s
FOR UPDATE OF c SKIP LOCKED

-- name: delete_rule_checks
DELETE FROM rule_checks WHERE id = ANY(%(ids)s)

-- name: next_rule_check_due_in
-- Seconds until the earliest check is due (negative when overdue, NULL when none).
SELECT EXTRACT(EPOCH FROM min(due_at) - clock_timestamp())::float8 FROM rule_checks
