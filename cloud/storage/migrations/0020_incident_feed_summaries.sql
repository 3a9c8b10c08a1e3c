-- The live feed's notifications carry the changed incident's summary (issue 16): an
-- API process then sends it to its streams as it arrives, instead of reading the
-- incident back first. That read was a round trip through a busy machine between an
-- alarm's commit and the dispatcher's screen, and three reads per alarm (opening,
-- claim, resolve): about a tenth of the API process's samples under py-spy in the
-- alarm benchmark.
--
-- The payload goes to the API processes' LISTEN connections only, which could read the
-- row anyway; each stream still keeps only its scope's incidents. A summary over 7,900
-- bytes (NOTIFY refuses 8,000, and a refusal would roll back the alarm) and a note's
-- notification stay a bare id, which the feed reads as before. An API process older
-- than this migration ignores summaries: upgrade the API processes first.
--
-- anju_incident_summary is the one definition of a summary's fields: the feed's read
-- by id (live_incidents) selects it too.
CREATE FUNCTION anju_incident_summary(i incidents) RETURNS json
LANGUAGE sql STABLE AS $$
    SELECT json_build_object(
        'id', i.id, 'type', i.type, 'priority', i.priority, 'status', i.status,
        'community', c.path, 'building', i.building, 'unit', i.unit,
        'device_id', i.device_id, 'opened_at', i.opened_at, 'updated_at', i.updated_at,
        'event_count', i.event_count, 'first_event_ts', e.ts,
        'claimed_by', i.claimed_by, 'claimed_at', i.claimed_at,
        'acknowledged_at', i.acknowledged_at, 'dispatched_to', i.dispatched_to,
        'dispatched_at', i.dispatched_at, 'closed_at', i.closed_at, 'outcome', i.outcome,
        'escalation_level', i.escalation_level, 'escalated_at', i.escalated_at,
        'community_id', i.community_id
    )
    FROM communities c
    LEFT JOIN events e ON e.id = i.first_event_id
    WHERE c.id = i.community_id
$$;

CREATE OR REPLACE FUNCTION anju_notify_incident() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF TG_TABLE_NAME = 'incidents' THEN
        payload := anju_incident_summary(NEW)::text;
        IF payload IS NULL OR octet_length(payload) > 7900 THEN
            payload := NEW.id::text;
        END IF;
    ELSE
        payload := NEW.incident_id::text;
    END IF;
    PERFORM pg_notify('anju_incidents', payload);
    RETURN NULL;
END;
$$;
