-- Payloads ingest could not store as sent, with the reason. The payload is kept up to
-- 64 KiB (enough to read what went wrong) and its original size is recorded, so one
-- oversized or hostile message cannot fill the database.

CREATE TABLE quarantine (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at   timestamptz NOT NULL DEFAULT now(),
    topic         text NOT NULL,
    gateway_id    text,
    reason        text NOT NULL,
    payload       bytea NOT NULL CHECK (octet_length(payload) <= 65536),
    payload_size  integer NOT NULL CHECK (payload_size >= octet_length(payload))
);
CREATE INDEX quarantine_received_at ON quarantine (received_at);
