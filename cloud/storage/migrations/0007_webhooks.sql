-- Webhooks for property managers and supervisors (DESIGN sections 6, 7 and 9).
--
-- A subscription belongs to a node of the community tree (a city, a street or a
-- community) and receives the incidents of that node's whole subtree that pass its
-- filters. Its secrets sign deliveries (Standard Webhooks, `whsec_` + base64); several
-- at once during a rotation, every one signing. They must stay readable to sign, so
-- they are not hashed: the database's access control guards them.
--
-- webhook_deliveries is the transactional outbox: rows are written in the same
-- transaction as the incident change they announce, and delivery workers take due
-- rows with FOR UPDATE SKIP LOCKED. A row that used up its attempts is a dead letter
-- (status 'dead') until replayed.
--
-- A worker claims a row by giving it a fresh claim_token, counting the attempt and
-- pushing next_attempt_at past the longest a send may take (a lease), all in one short
-- transaction; it records the outcome only if the token is still its own. A worker that
-- dies mid-send leaves the row pending, due again when its lease runs out.

CREATE TABLE webhook_subscriptions (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    community_id     bigint NOT NULL REFERENCES communities (id),
    url              text NOT NULL CHECK (url ~ '^https?://'),
    description      text NOT NULL DEFAULT '',
    event_types      text[] NOT NULL DEFAULT '{}',
    incident_types   text[] NOT NULL DEFAULT '{}',
    max_priority     smallint NOT NULL DEFAULT 3 CHECK (max_priority BETWEEN 1 AND 3),
    secrets          text[] NOT NULL CHECK (cardinality(secrets) >= 1),
    status           text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
COMMENT ON COLUMN webhook_subscriptions.event_types IS 'empty: every event type';
COMMENT ON COLUMN webhook_subscriptions.incident_types IS 'empty: every incident type';
CREATE INDEX webhook_subscriptions_community ON webhook_subscriptions (community_id)
    WHERE status = 'active';

CREATE TABLE webhook_deliveries (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id        text NOT NULL UNIQUE,
    subscription_id   bigint NOT NULL REFERENCES webhook_subscriptions (id),
    incident_id       bigint REFERENCES incidents (id),
    event_type        text NOT NULL,
    payload           jsonb NOT NULL,
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'dead')),
    attempts          integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    last_status_code  integer,
    last_error        text,
    last_attempt_at   timestamptz,
    claim_token       uuid,
    created_at        timestamptz NOT NULL DEFAULT now(),
    delivered_at      timestamptz
);
COMMENT ON COLUMN webhook_deliveries.message_id IS
    'the webhook-id header: the same on every attempt and replay, receivers dedupe on it';
COMMENT ON COLUMN webhook_deliveries.claim_token IS
    'set by each claim; an outcome is recorded only by the claim that holds it';
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_dead ON webhook_deliveries (subscription_id, created_at)
    WHERE status = 'dead';
CREATE INDEX webhook_deliveries_incident ON webhook_deliveries (incident_id);
CREATE INDEX webhook_deliveries_subscription ON webhook_deliveries (subscription_id, id)
    WHERE status = 'pending';
