-- name: upsert_community_node
-- Insert a tree node or return the existing one with that tier and path (the no-op
-- update makes RETURNING yield the existing row); the caller checks its parent.
INSERT INTO communities (parent_id, tier, name, path)
VALUES (%(parent_id)s, %(tier)s, %(name)s, %(path)s)
ON CONFLICT (tier, path) DO UPDATE SET path = EXCLUDED.path
RETURNING id, parent_id, tier, name, path, status

-- name: community_by_path
-- FOR SHARE: inside the caller's transaction, retiring the community (which locks it
-- FOR UPDATE, cloud.tree) waits for what is being registered under it and then sees
-- it, or what is registered waits and sees the community retired.
SELECT id, parent_id, tier, name, path, status
FROM communities
WHERE tier = 'community' AND path = %(path)s
FOR SHARE

-- name: upsert_gateway
-- Returns the gateway's row; its community_id differs from the one asked for when the
-- gateway is already registered elsewhere.
INSERT INTO gateways (id, community_id)
VALUES (%(id)s, %(community_id)s)
ON CONFLICT (id) DO UPDATE SET id = EXCLUDED.id
RETURNING id, community_id, status, auth, credentials_issued_at

-- name: upsert_device
-- Registers a device or updates its description; returns no row when the device is
-- registered behind another gateway (moving it is a separate, deliberate step).
-- resident_id binds a personal device (a wearable) to its wearer, or NULL.
INSERT INTO devices (id, gateway_id, kind, profile_id, building, unit, resident_id)
VALUES (
    %(id)s, %(gateway_id)s, %(kind)s, %(profile_id)s, %(building)s, %(unit)s, %(resident_id)s
)
ON CONFLICT (id) DO UPDATE
SET kind = EXCLUDED.kind,
    profile_id = EXCLUDED.profile_id,
    building = EXCLUDED.building,
    unit = EXCLUDED.unit,
    resident_id = EXCLUDED.resident_id,
    updated_at = now()
WHERE devices.gateway_id = EXCLUDED.gateway_id
RETURNING id, gateway_id, kind, profile_id, building, unit, status, resident_id, address,
          egress, poll_interval_s

-- The installer's path (cloud.registry's add/move/remove/import): a change to a
-- gateway's devices locks the gateway row first, so its config versions follow one
-- another and two changes never make the same version, and only then the device rows,
-- so two changes never wait on each other's locks in opposite orders.

-- name: registry_device_gateway
-- Where a device is now, unlocked: what to lock before the device itself.
SELECT gateway_id FROM devices WHERE id = %(id)s

-- name: registry_gateway_lock
SELECT id, community_id, status, auth, credentials_issued_at, config_version
FROM gateways
WHERE id = %(id)s
FOR UPDATE

-- name: registry_gateway_credentials
-- New credentials were issued (and granted on the broker) just now.
UPDATE gateways
SET auth = %(auth)s, credentials_issued_at = now()
WHERE id = %(id)s
RETURNING id, community_id, status, auth, credentials_issued_at

-- name: registry_gateway_revoke
-- Idempotent: a revoked gateway stays as it is (ingest refuses its batches).
UPDATE gateways
SET status = 'revoked'
WHERE id = %(id)s
RETURNING id, community_id, status, auth, credentials_issued_at

-- name: registry_resident_home
-- The community of an active resident, to bind a device only to someone living in the
-- community of its gateway.
SELECT community_id FROM residents WHERE id = %(id)s AND status = 'active'

-- name: registry_device_lock
SELECT id, gateway_id, kind, profile_id, building, unit, status, resident_id, address,
       egress, poll_interval_s
FROM devices
WHERE id = %(id)s
FOR UPDATE

-- name: registry_device_put
-- Adds a device or replaces its description (and makes a disabled one active again)
-- behind the same gateway; no row when it is behind another one.
INSERT INTO devices (
    id, gateway_id, kind, profile_id, building, unit, resident_id, address, egress,
    poll_interval_s
)
VALUES (
    %(id)s, %(gateway_id)s, %(kind)s, %(profile_id)s, %(building)s, %(unit)s,
    %(resident_id)s, %(address)s, %(egress)s, %(poll_interval_s)s
)
ON CONFLICT (id) DO UPDATE
SET kind = EXCLUDED.kind,
    profile_id = EXCLUDED.profile_id,
    building = EXCLUDED.building,
    unit = EXCLUDED.unit,
    resident_id = EXCLUDED.resident_id,
    address = EXCLUDED.address,
    egress = EXCLUDED.egress,
    poll_interval_s = EXCLUDED.poll_interval_s,
    status = 'active',
    updated_at = now()
WHERE devices.gateway_id = EXCLUDED.gateway_id
RETURNING id, gateway_id, kind, profile_id, building, unit, status, resident_id, address,
          egress, poll_interval_s

-- name: registry_device_move
UPDATE devices
SET gateway_id = %(gateway_id)s,
    building = %(building)s,
    unit = %(unit)s,
    resident_id = %(resident_id)s,
    address = %(address)s,
    updated_at = now()
WHERE id = %(id)s
RETURNING id, gateway_id, kind, profile_id, building, unit, status, resident_id, address,
          egress, poll_interval_s

-- name: registry_device_disable
UPDATE devices
SET status = 'disabled', updated_at = now()
WHERE id = %(id)s
RETURNING id, gateway_id, kind, profile_id, building, unit, status, resident_id, address,
          egress, poll_interval_s

-- name: registry_config_devices
-- What a gateway's pushed config holds: its active devices that have an address (those
-- registered without one are read by the gateway's own file).
SELECT id, profile_id, address, building, unit, egress, poll_interval_s
FROM devices
WHERE gateway_id = %(gateway_id)s AND status = 'active' AND address IS NOT NULL
ORDER BY id

-- name: registry_config_insert
-- A gateway's new config version; the caller holds the gateway row locked. A new
-- version supersedes the refusal of an older one, so its error is cleared.
WITH config AS (
    INSERT INTO gateway_configs (gateway_id, version, document)
    VALUES (%(gateway_id)s, %(version)s, %(document)s::jsonb)
    RETURNING gateway_id, version
)
UPDATE gateways g
SET config_version = config.version, config_error = NULL
FROM config
WHERE g.id = config.gateway_id
RETURNING g.config_version

-- name: registry_gateway_config
-- One version of a gateway's config, as JSON text (the pusher sends it as it is).
SELECT document::text AS document, created_at
FROM gateway_configs
WHERE gateway_id = %(gateway_id)s AND version = %(version)s
