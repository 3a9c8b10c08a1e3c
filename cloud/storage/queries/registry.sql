-- name: upsert_community_node
-- Insert a tree node or return the existing one with that tier and path (the no-op
-- update makes RETURNING yield the existing row); the caller checks its parent.
INSERT INTO communities (parent_id, tier, name, path)
VALUES (%(parent_id)s, %(tier)s, %(name)s, %(path)s)
ON CONFLICT (tier, path) DO UPDATE SET path = EXCLUDED.path
RETURNING id, parent_id, tier, name, path

-- name: community_by_path
SELECT id, parent_id, tier, name, path
FROM communities
WHERE tier = 'community' AND path = %(path)s

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
INSERT INTO devices (id, gateway_id, kind, profile_id, building, unit)
VALUES (%(id)s, %(gateway_id)s, %(kind)s, %(profile_id)s, %(building)s, %(unit)s)
ON CONFLICT (id) DO UPDATE
SET kind = EXCLUDED.kind,
    profile_id = EXCLUDED.profile_id,
    building = EXCLUDED.building,
    unit = EXCLUDED.unit,
    updated_at = now()
WHERE devices.gateway_id = EXCLUDED.gateway_id
RETURNING id, gateway_id, kind, profile_id, building, unit, status

-- name: device_gateway
SELECT gateway_id FROM devices WHERE id = %(id)s

-- name: upsert_resident
INSERT INTO residents (reference, community_id, building, unit, needs_evacuation_help)
VALUES (%(reference)s, %(community_id)s, %(building)s, %(unit)s, %(needs_help)s)
ON CONFLICT (reference) DO UPDATE
SET community_id = EXCLUDED.community_id,
    building = EXCLUDED.building,
    unit = EXCLUDED.unit,
    needs_evacuation_help = EXCLUDED.needs_evacuation_help,
    status = 'active'
RETURNING id
