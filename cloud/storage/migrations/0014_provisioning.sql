-- Installers' provisioning: each gateway's credentials and the device config the cloud
-- pushes to it.
--
-- A gateway authenticates to the broker with a password or a client certificate
-- (auth); credentials_issued_at is when its current ones were made (NULL: never, such
-- as a registration whose broker grant failed and has to be run again).
--
-- config_version is the version of the device config the cloud wants the gateway to
-- run: every change to its devices through the registry makes a new gateway_configs
-- row and sets it. config_applied is the version the gateway reported running (its
-- command results and its status); config_refused is the last version it refused, and
-- config_error why. 0 means none: a gateway whose devices were never managed by the
-- registry keeps the devices of its own config file and is never pushed to.
ALTER TABLE gateways
    ADD COLUMN auth text NOT NULL DEFAULT 'password'
        CHECK (auth IN ('password', 'certificate')),
    ADD COLUMN credentials_issued_at timestamptz,
    ADD COLUMN config_version bigint NOT NULL DEFAULT 0 CHECK (config_version >= 0),
    ADD COLUMN config_applied bigint NOT NULL DEFAULT 0 CHECK (config_applied >= 0),
    ADD COLUMN config_refused bigint NOT NULL DEFAULT 0 CHECK (config_refused >= 0),
    ADD COLUMN config_error text,
    ADD COLUMN config_pushed_at timestamptz,
    ADD COLUMN config_applied_at timestamptz;

-- The gateways whose wanted config is not yet the one they run: what the pusher scans.
CREATE INDEX gateways_config_due ON gateways (id) WHERE config_version > config_applied;

-- Where the gateway reaches a device (a URL of the profile's protocol), whether it is a
-- door on an escape route, and its own poll interval (NULL: the profile's). address is
-- NULL for devices registered before the registry pushed configs: those are read by
-- the gateway's own file and left out of pushed configs.
ALTER TABLE devices
    ADD COLUMN address text CHECK (length(address) BETWEEN 1 AND 512),
    ADD COLUMN egress boolean NOT NULL DEFAULT false,
    ADD COLUMN poll_interval_s double precision
        CHECK (poll_interval_s > 0 AND poll_interval_s <= 3600);

-- Every config made for a gateway, kept so what a gateway was sent can be read back.
-- document is the GatewayConfigDocument (schemas/wire.py) of that version.
CREATE TABLE gateway_configs (
    gateway_id  text NOT NULL REFERENCES gateways (id),
    version     bigint NOT NULL CHECK (version >= 1),
    document    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, version)
);
