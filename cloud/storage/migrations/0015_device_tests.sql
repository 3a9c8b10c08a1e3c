-- Installers' tests of a device through its running gateway (POST /devices/{id}/test).
--
-- The API inserts a request and waits for its row to be finished; the config pusher
-- (cloud/configs), which holds the cloud's MQTT link to the gateways, claims requests
-- not yet sent, publishes each as a read_device command (id test-{id}) and records
-- the gateway's answer here. The two may be separate processes (anju cloud run, or
-- anju cloud configs beside the API), so the database is where they meet.
--
-- requested_by is the API key that asked (keys are revoked, never deleted, so the row
-- keeps saying who read what). expires_at bounds the command: a request not sent by then
-- is never sent, and the gateway refuses a command past it. sent_at is when the
-- pusher published it; finished_at when the answer was recorded, with ok, detail and
-- data (the CommandResult's data: point.{name} values, elapsed_ms, fault).
CREATE TABLE device_tests (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id     text NOT NULL REFERENCES devices (id),
    gateway_id    text NOT NULL REFERENCES gateways (id),
    requested_by  bigint NOT NULL REFERENCES api_keys (id),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    sent_at       timestamptz,
    finished_at   timestamptz,
    ok            boolean,
    detail        text,
    data          jsonb,
    CHECK (expires_at > requested_at),
    CHECK ((finished_at IS NULL) = (ok IS NULL))
);

-- What the pusher scans a few times a second: requests not yet sent.
CREATE INDEX device_tests_unsent ON device_tests (id) WHERE sent_at IS NULL;
CREATE INDEX device_tests_device ON device_tests (device_id, requested_at);
