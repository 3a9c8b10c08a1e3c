-- name: open_or_join_incident
-- Opens an incident, or joins the device's active incident of the same type, and links
-- the event (event_id NULL: none) to whichever it is. The partial unique index
-- incidents_one_active_per_device_type arbitrates, so two workers racing on one
-- device end with one incident. xmax = 0 holds only for a freshly inserted row, which
-- tells an opening from a join in the same statement. id: the id an opening takes,
-- drawn by the caller (draw_incident_ids) so that what follows an opening can be sent
-- before this returns; NULL draws one here.
WITH incident AS (
    INSERT INTO incidents (
        id, type, priority, community_id, building, unit, device_id,
        event_count, first_event_id, last_event_at
    )
    OVERRIDING SYSTEM VALUE
    VALUES (
        COALESCE(%(id)s::bigint, nextval(pg_get_serial_sequence('incidents', 'id'))),
        %(type)s, %(priority)s, %(community_id)s, %(building)s, %(unit)s, %(device_id)s,
        1, %(event_id)s::bigint, %(event_ts)s
    )
    ON CONFLICT (device_id, type) WHERE status NOT IN ('resolved', 'false_alarm')
    DO UPDATE SET
        event_count = incidents.event_count + 1,
        priority = LEAST(incidents.priority, EXCLUDED.priority),
        last_event_at = GREATEST(incidents.last_event_at, EXCLUDED.last_event_at),
        updated_at = now()
    RETURNING id, (xmax = 0) AS opened
),
linked AS (
    INSERT INTO incident_events (incident_id, event_id)
    SELECT id, %(event_id)s::bigint FROM incident WHERE %(event_id)s::bigint IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT id, opened FROM incident

-- name: log_incident_change
INSERT INTO incident_log (incident_id, from_status, to_status, actor, note)
VALUES (%(incident_id)s, %(from_status)s, %(to_status)s, %(actor)s, %(note)s)

-- name: log_incident_opening
-- The opening's log row, written only if the incident with this id exists: sent with
-- the id drawn for an opening before the upsert's outcome is known, it writes nothing
-- when the draft joined an incident instead.
INSERT INTO incident_log (incident_id, from_status, to_status, actor, note)
SELECT id, NULL, status, %(actor)s, %(note)s FROM incidents WHERE id = %(incident_id)s

-- name: open_or_join_resident_incident
-- As open_or_join_incident, for incidents about a resident (evacuation help, a smoke
-- alarm in their home): incidents_one_active_per_resident_type arbitrates.
WITH incident AS (
    INSERT INTO incidents (
        id, type, priority, community_id, building, unit, device_id, resident_id, scope,
        event_count, first_event_id, last_event_at
    )
    OVERRIDING SYSTEM VALUE
    VALUES (
        COALESCE(%(id)s::bigint, nextval(pg_get_serial_sequence('incidents', 'id'))),
        %(type)s, %(priority)s, %(community_id)s, %(building)s, %(unit)s, NULL,
        %(resident_id)s, 'resident', 1, %(event_id)s::bigint, %(event_ts)s
    )
    ON CONFLICT (resident_id, type) WHERE status NOT IN ('resolved', 'false_alarm')
    DO UPDATE SET
        event_count = incidents.event_count + 1,
        priority = LEAST(incidents.priority, EXCLUDED.priority),
        last_event_at = GREATEST(incidents.last_event_at, EXCLUDED.last_event_at),
        updated_at = now()
    RETURNING id, (xmax = 0) AS opened
),
linked AS (
    INSERT INTO incident_events (incident_id, event_id)
    SELECT id, %(event_id)s::bigint FROM incident WHERE %(event_id)s::bigint IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT id, opened FROM incident

-- name: open_or_join_building_incident
-- As open_or_join_incident, for incidents about a whole building (a fire): the first
-- alarm opens it, naming its device; alarms from any device of the building join it.
-- incidents_one_active_per_building_type arbitrates.
WITH incident AS (
    INSERT INTO incidents (
        id, type, priority, community_id, building, unit, device_id, scope,
        event_count, first_event_id, last_event_at
    )
    OVERRIDING SYSTEM VALUE
    VALUES (
        COALESCE(%(id)s::bigint, nextval(pg_get_serial_sequence('incidents', 'id'))),
        %(type)s, %(priority)s, %(community_id)s, %(building)s, %(unit)s, %(device_id)s,
        'building', 1, %(event_id)s::bigint, %(event_ts)s
    )
    ON CONFLICT (community_id, building, type)
        WHERE scope = 'building' AND status NOT IN ('resolved', 'false_alarm')
    DO UPDATE SET
        event_count = incidents.event_count + 1,
        priority = LEAST(incidents.priority, EXCLUDED.priority),
        last_event_at = GREATEST(incidents.last_event_at, EXCLUDED.last_event_at),
        updated_at = now()
    RETURNING id, (xmax = 0) AS opened
),
linked AS (
    INSERT INTO incident_events (incident_id, event_id)
    SELECT id, %(event_id)s::bigint FROM incident WHERE %(event_id)s::bigint IS NOT NULL
    ON CONFLICT DO NOTHING
)
SELECT id, opened FROM incident
