-- The live incident feed (GET /incidents/live, cloud/api/live.py): every transaction
-- that opens or changes an incident, or adds a note to one, notifies the channel
-- anju_incidents with the incident's id when it commits. Each API process LISTENs on
-- one connection and reads the changed incidents itself, so the payload stays a bare
-- id (well under NOTIFY's 8000-byte limit) and never carries data a scope should not
-- see. PostgreSQL folds identical notifications of one transaction into one.
CREATE FUNCTION anju_notify_incident() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'incidents' THEN
        PERFORM pg_notify('anju_incidents', NEW.id::text);
    ELSE
        PERFORM pg_notify('anju_incidents', NEW.incident_id::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER incidents_notify
    AFTER INSERT OR UPDATE ON incidents
    FOR EACH ROW EXECUTE FUNCTION anju_notify_incident();

CREATE TRIGGER incident_notes_notify
    AFTER INSERT ON incident_notes
    FOR EACH ROW EXECUTE FUNCTION anju_notify_incident();
