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
RETURNING id, community_id, status

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
RETURNING id, gateway_id, kind, profile_id, building, unit, status, resident_id

-- name: device_gateway
SELECT gateway_id FROM devices WHERE id = %(id)s
