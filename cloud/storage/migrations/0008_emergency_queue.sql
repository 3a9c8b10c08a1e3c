-- The emergency queue (DESIGN section 7, docs/emergency-queue.md): who claimed an
-- incident and when, contact, dispatch, the outcome, dispatcher notes, and the
-- escalation timers that watch an incident until it is claimed and acknowledged.
--
-- Outcome and status: resolving sets both. The outcome 'false_alarm' closes the
-- incident with status 'false_alarm'; 'handled' and 'hospital' close it with status
-- 'resolved'. The check below holds the two together; incidents closed before this
-- migration keep a NULL outcome. closed_at (0003) is when the incident was resolved.

ALTER TABLE incidents
    ADD COLUMN claimed_by        text,
    ADD COLUMN claimed_at        timestamptz,
    ADD COLUMN acknowledged_at   timestamptz,
    ADD COLUMN dispatched_to     text,
    ADD COLUMN dispatched_at     timestamptz,
    ADD COLUMN outcome           text CHECK (outcome IN ('handled', 'hospital', 'false_alarm')),
    ADD COLUMN escalation_level  integer NOT NULL DEFAULT 0 CHECK (escalation_level >= 0),
    ADD COLUMN escalated_at      timestamptz,
    ADD CONSTRAINT incidents_outcome_matches_status CHECK (
        outcome IS NULL
        OR (status = 'resolved' AND outcome IN ('handled', 'hospital'))
        OR (status = 'false_alarm' AND outcome = 'false_alarm')
    ),
    ADD CONSTRAINT incidents_claimed_by_someone CHECK (
        status NOT IN ('claimed', 'acknowledged', 'dispatched')
        OR (claimed_by IS NOT NULL AND claimed_at IS NOT NULL)
    );

-- Free-text notes by dispatchers, any number per incident, never edited.
CREATE TABLE incident_notes (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    at           timestamptz NOT NULL DEFAULT now(),
    author       text NOT NULL,
    text         text NOT NULL CHECK (length(text) > 0)
);
CREATE INDEX incident_notes_incident ON incident_notes (incident_id, at);

-- A pending escalation timer. A row exists exactly while its condition is unmet:
-- 'unclaimed' is armed when the incident opens and deleted by the claim;
-- 'unacknowledged' is armed by the claim and deleted by the acknowledgement. Each is
-- armed, fired, re-armed and deleted in the transaction of the change that causes it,
-- and the primary key allows one per incident and kind, so a restart can neither
-- lose nor double one. Escalation workers take due rows with FOR UPDATE SKIP LOCKED.
CREATE TABLE incident_timers (
    incident_id    bigint NOT NULL REFERENCES incidents (id),
    kind           text NOT NULL CHECK (kind IN ('unclaimed', 'unacknowledged')),
    armed_at       timestamptz NOT NULL DEFAULT now(),
    due_at         timestamptz NOT NULL,
    fired_count    integer NOT NULL DEFAULT 0 CHECK (fired_count >= 0),
    last_fired_at  timestamptz,
    PRIMARY KEY (incident_id, kind)
);
CREATE INDEX incident_timers_due ON incident_timers (due_at);
