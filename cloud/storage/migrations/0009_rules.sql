-- What the rule engine needs beyond events: the residents it protects, incidents about
-- a resident rather than a device, and an index for correlating cameras with doors.
--
-- A resident row holds where the person lives and whether they need help to leave
-- the building in a fire; `reference` is the care provider's own opaque id. Names,
-- phone numbers and health data are not stored here (DESIGN section 9 wants them
-- encrypted at rest; until that exists, Anju keeps none).

CREATE TABLE residents (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id           bigint NOT NULL REFERENCES communities (id),
    building               text NOT NULL,
    unit                   text NOT NULL,
    needs_evacuation_help  boolean NOT NULL DEFAULT false,
    reference              text NOT NULL UNIQUE,
    status                 text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'moved_out')),
    created_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX residents_home ON residents (community_id, building, unit) WHERE status = 'active';

-- An incident is about a device (device_id) or, for evacuation help and a smoke alarm
-- in someone's home, about a resident (resident_id, device_id NULL). Repeats join the
-- subject's active incident of the type; NULL subjects never collide in either index.
ALTER TABLE incidents ADD COLUMN resident_id bigint REFERENCES residents (id);
CREATE UNIQUE INDEX incidents_one_active_per_resident_type
    ON incidents (resident_id, type)
    WHERE status NOT IN ('resolved', 'false_alarm');

-- Tailgating compares a door's line crossings (camera events naming the door) with its
-- access grants (door controller events) over a short window.
CREATE INDEX events_line_crossing_door
    ON events ((data ->> 'door'), ts)
    WHERE type = 'camera.line_crossing';
CREATE INDEX events_device_type_ts ON events (device_id, type, ts);
