-- Events as the edge reported them, the incidents rules open from them, which events
-- each incident gathered, and the log of every incident state change.

CREATE TABLE events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts           timestamptz NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    device_id    text NOT NULL,
    gateway_id   text NOT NULL,
    seq          bigint NOT NULL,
    type         text NOT NULL,
    severity     text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    data         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_device_ts ON events (device_id, ts);
CREATE INDEX events_ts ON events (ts);

CREATE TABLE incidents (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type            text NOT NULL,
    priority        smallint NOT NULL CHECK (priority BETWEEN 1 AND 3),
    status          text NOT NULL DEFAULT 'open' CHECK (
        status IN ('open', 'claimed', 'acknowledged', 'dispatched', 'resolved', 'false_alarm')
    ),
    community_id    bigint NOT NULL REFERENCES communities (id),
    building        text,
    unit            text,
    device_id       text,
    opened_at       timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    event_count     integer NOT NULL DEFAULT 0 CHECK (event_count >= 0),
    first_event_id  bigint REFERENCES events (id),
    last_event_at   timestamptz
);
-- Repeats from one device join its active incident of that type: this index makes
-- "one active incident per device and type" hold even with many ingest workers, and
-- is the arbiter of the opening INSERT ... ON CONFLICT.
CREATE UNIQUE INDEX incidents_one_active_per_device_type
    ON incidents (device_id, type)
    WHERE status NOT IN ('resolved', 'false_alarm');
-- The dispatch queue: active incidents by priority, oldest first.
CREATE INDEX incidents_queue
    ON incidents (priority, opened_at)
    WHERE status NOT IN ('resolved', 'false_alarm');
CREATE INDEX incidents_community ON incidents (community_id);

CREATE TABLE incident_events (
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    event_id     bigint NOT NULL REFERENCES events (id),
    joined_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (incident_id, event_id)
);
CREATE INDEX incident_events_event ON incident_events (event_id);

-- from_status is NULL for the row that records the opening.
CREATE TABLE incident_log (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    at           timestamptz NOT NULL DEFAULT now(),
    from_status  text,
    to_status    text NOT NULL,
    actor        text NOT NULL,
    note         text NOT NULL DEFAULT ''
);
CREATE INDEX incident_log_incident ON incident_log (incident_id, at);
