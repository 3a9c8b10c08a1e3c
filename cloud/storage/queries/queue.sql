-- name: arm_unclaimed_timer
-- Armed in the transaction that opens the incident: due when its priority's unclaimed
-- limit has passed since the opening. limits_s holds the limits of P1, P2, P3.
INSERT INTO incident_timers (incident_id, kind, due_at)
SELECT id, 'unclaimed', opened_at + make_interval(secs => (%(limits_s)s::float8[])[priority])
FROM incidents
WHERE id = %(incident_id)s
ON CONFLICT (incident_id, kind) DO NOTHING

-- name: arm_unacknowledged_timer
-- Armed by the claim: due when the priority's unacknowledged limit has passed since
-- the opening (the resident's wait), but never sooner than grace_s after the claim,
-- so a late claimer has time to reach the resident before the next escalation.
INSERT INTO incident_timers (incident_id, kind, due_at)
SELECT id, 'unacknowledged', GREATEST(
    opened_at + make_interval(secs => (%(limits_s)s::float8[])[priority]),
    now() + make_interval(secs => %(grace_s)s)
)
FROM incidents
WHERE id = %(incident_id)s
ON CONFLICT (incident_id, kind) DO NOTHING

-- name: cancel_timers
-- kind NULL cancels every timer of the incident (it was resolved).
DELETE FROM incident_timers
WHERE incident_id = %(incident_id)s AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)

-- name: lock_incident
-- Transitions read the incident under its row lock: a racing transition waits, then
-- sees the status this one left.
SELECT status, claimed_by FROM incidents WHERE id = %(incident_id)s FOR UPDATE

-- name: claim_incident
UPDATE incidents
SET status = 'claimed', claimed_by = %(actor)s, claimed_at = now(), updated_at = now()
WHERE id = %(incident_id)s

-- name: acknowledge_incident
UPDATE incidents
SET status = 'acknowledged', acknowledged_at = now(), updated_at = now()
WHERE id = %(incident_id)s

-- name: dispatch_incident
UPDATE incidents
SET status = 'dispatched', dispatched_to = %(dispatched_to)s, dispatched_at = now(),
    updated_at = now()
WHERE id = %(incident_id)s

-- name: resolve_incident
UPDATE incidents
SET status = %(status)s, outcome = %(outcome)s, closed_at = now(), updated_at = now()
WHERE id = %(incident_id)s

-- name: add_incident_note
INSERT INTO incident_notes (incident_id, author, text)
VALUES (%(incident_id)s, %(author)s, %(text)s)
RETURNING id, at

-- name: incident_exists
SELECT 1 FROM incidents WHERE id = %(incident_id)s

-- name: take_due_timers
-- Due timers with their incidents, both rows locked; rows another worker (or a
-- transition) holds are skipped, so no timer fires twice and nobody waits. now() is
-- the transaction's start: a timer never fires before its due time.
SELECT t.incident_id, t.kind, t.due_at, t.fired_count, i.status, i.priority,
       EXTRACT(EPOCH FROM now() - i.opened_at)::float8 AS waited_s, now() AS now
FROM incident_timers t
JOIN incidents i ON i.id = t.incident_id
WHERE t.due_at <= now()
ORDER BY t.due_at
LIMIT %(limit)s
FOR UPDATE OF t, i SKIP LOCKED

-- name: escalate_incident
-- One step more urgent: P3 → P2 → P1, and the escalation level counts every step.
UPDATE incidents
SET priority = GREATEST(priority - 1, 1), escalation_level = escalation_level + 1,
    escalated_at = now(), updated_at = now()
WHERE id = %(incident_id)s
RETURNING priority, escalation_level

-- name: rearm_timer
UPDATE incident_timers
SET due_at = now() + make_interval(secs => %(repeat_s)s), fired_count = fired_count + 1,
    last_fired_at = now()
WHERE incident_id = %(incident_id)s AND kind = %(kind)s

-- name: next_timer_due_in
-- Seconds until the earliest timer is due (negative when overdue, NULL when none).
SELECT EXTRACT(EPOCH FROM min(due_at) - clock_timestamp())::float8 FROM incident_timers
