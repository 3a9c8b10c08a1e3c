-- name: open_or_join_incident
-- Opens an incident, or joins the device's active incident of the same type. The
-- partial unique index incidents_one_active_per_device_type arbitrates, so two
-- workers racing on one device end with one incident. xmax = 0 holds only for a
-- freshly inserted row, which tells an opening from a join in the same statement.
INSERT INTO incidents (
    type, priority, community_id, building, unit, device_id,
    event_count, first_event_id, last_event_at
)
VALUES (
    %(type)s, %(priority)s, %(community_id)s, %(building)s, %(unit)s, %(device_id)s,
    1, %(event_id)s, %(event_ts)s
)
ON CONFLICT (device_id, type) WHERE status NOT IN ('resolved', 'false_alarm')
DO UPDATE SET
    event_count = incidents.event_count + 1,
    priority = LEAST(incidents.priority, EXCLUDED.priority),
    last_event_at = GREATEST(incidents.last_event_at, EXCLUDED.last_event_at),
    updated_at = now()
RETURNING id, status, (xmax = 0) AS opened

-- name: link_incident_event
INSERT INTO incident_events (incident_id, event_id)
VALUES (%(incident_id)s, %(event_id)s)
ON CONFLICT DO NOTHING

-- name: log_incident_change
INSERT INTO incident_log (incident_id, from_status, to_status, actor, note)
VALUES (%(incident_id)s, %(from_status)s, %(to_status)s, %(actor)s, %(note)s)

-- name: open_or_join_resident_incident
-- As open_or_join_incident, for incidents about a resident (evacuation help, a smoke
-- alarm in their home): incidents_one_active_per_resident_type arbitrates.
INSERT INTO incidents (
    type, priority, community_id, building, unit, device_id, resident_id, scope,
    event_count, first_event_id, last_event_at
)
VALUES (
    %(type)s, %(priority)s, %(community_id)s, %(building)s, %(unit)s, NULL, %(resident_id)s,
    'resident', 1, %(event_id)s, %(event_ts)s
)
ON CONFLICT (resident_id, type) WHERE status NOT IN ('resolved', 'false_alarm')
DO UPDATE SET
    event_count = incidents.event_count + 1,
    priority = LEAST(incidents.priority, EXCLUDED.priority),
    last_event_at = GREATEST(incidents.last_event_at, EXCLUDED.last_event_at),
    updated_at = now()
RETURNING id, status, (xmax = 0) AS opened

-- name: open_or_join_building_incident
-- As open_or_join_incident, for incidents about a whole building (a fire): the first
-- alarm opens it, naming its device; alarms from any device of the building join it.
-- incidents_one_active_per_building_type arbitrates.
INSERT INTO incidents (
    type, priority, community_id, building, unit, device_id, scope,
    event_count, first_event_id, last_event_at
)
VALUES (
    %(type)s, %(priority)s, %(community_id)s, %(building)s, %(unit)s, %(device_id)s,
    'building', 1, %(event_id)s, %(event_ts)s
)
ON CONFLICT (community_id, building, type)
    WHERE scope = 'building' AND status NOT IN ('resolved', 'false_alarm')
DO UPDATE SET
    event_count = incidents.event_count + 1,
    priority = LEAST(incidents.priority, EXCLUDED.priority),
    last_event_at = GREATEST(incidents.last_event_at, EXCLUDED.last_event_at),
    updated_at = now()
RETURNING id, status, (xmax = 0) AS opened
