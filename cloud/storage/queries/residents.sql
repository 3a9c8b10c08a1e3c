-- name: resident_community_tier
-- Residents live in a community node, never a street or a city.
SELECT tier FROM communities WHERE id = %(id)s

-- name: resident_insert
-- Returns no row when the reference is registered already (the caller says so).
INSERT INTO residents (community_id, reference, building, unit, needs_evacuation_help)
VALUES (%(community_id)s, %(reference)s, %(building)s, %(unit)s, %(needs_help)s)
ON CONFLICT (reference) DO NOTHING
RETURNING id, community_id, reference, building, unit, needs_evacuation_help, status,
          created_at, updated_at, erased_at,
          personal_ciphertext IS NOT NULL AS has_personal_data

-- name: resident_update
-- NULL leaves a column as it is; set_personal replaces the sealed data as a whole (all
-- three columns NULL removes it). Returns no row for an unknown or erased resident.
UPDATE residents
SET building = COALESCE(%(building)s::text, building),
    unit = COALESCE(%(unit)s::text, unit),
    needs_evacuation_help = COALESCE(%(needs_help)s::boolean, needs_evacuation_help),
    personal_key_id = CASE WHEN %(set_personal)s THEN %(key_id)s::text
                           ELSE personal_key_id END,
    personal_wrapped_key = CASE WHEN %(set_personal)s THEN %(wrapped_key)s::bytea
                                ELSE personal_wrapped_key END,
    personal_ciphertext = CASE WHEN %(set_personal)s THEN %(ciphertext)s::bytea
                               ELSE personal_ciphertext END,
    updated_at = now()
WHERE id = %(id)s AND status <> 'erased'
RETURNING id, community_id, reference, building, unit, needs_evacuation_help, status,
          created_at, updated_at, erased_at,
          personal_ciphertext IS NOT NULL AS has_personal_data

-- name: resident_status
SELECT status FROM residents WHERE id = %(id)s

-- name: resident_get
SELECT id, community_id, reference, building, unit, needs_evacuation_help, status,
       created_at, updated_at, erased_at,
       personal_ciphertext IS NOT NULL AS has_personal_data
FROM residents
WHERE id = %(id)s

-- name: resident_page
-- Keyset pagination on id; community_ids NULL means every community, status NULL
-- every status.
SELECT id, community_id, reference, building, unit, needs_evacuation_help, status,
       created_at, updated_at, erased_at,
       personal_ciphertext IS NOT NULL AS has_personal_data
FROM residents
WHERE (%(community_ids)s::bigint[] IS NULL OR community_id = ANY (%(community_ids)s::bigint[]))
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after_id)s::bigint IS NULL OR id > %(after_id)s::bigint)
ORDER BY id
LIMIT %(limit)s

-- name: resident_erase
-- The deletion right: the sealed data goes, and with it the care provider's reference
-- and the evacuation flag (which tells of a disability). The home stays: incidents hold
-- it anyway, and without the person it names a flat. Erasing again keeps the first
-- erased_at. Returns no row for an unknown resident.
UPDATE residents
SET personal_key_id = NULL,
    personal_wrapped_key = NULL,
    personal_ciphertext = NULL,
    reference = 'erased-' || id,
    needs_evacuation_help = false,
    status = 'erased',
    erased_at = COALESCE(erased_at, now()),
    updated_at = now()
WHERE id = %(id)s
RETURNING id

-- name: resident_sealed
-- The sealed data of one resident; all three NULL when there is none, no row when
-- there is no such resident.
SELECT personal_key_id, personal_wrapped_key, personal_ciphertext
FROM residents
WHERE id = %(id)s

-- name: resident_log_access
INSERT INTO resident_access_log (resident_id, incident_id, api_key_id, actor, role, purpose)
VALUES (%(resident_id)s, %(incident_id)s, %(api_key_id)s, %(actor)s, %(role)s, %(purpose)s)

-- name: resident_access_log
-- Newest first: by id, which grows with every row written, so a page can start below
-- the id %(before_id)s of the last row of the page before.
SELECT id, at, resident_id, incident_id, api_key_id, actor, role, purpose
FROM resident_access_log
WHERE resident_id = %(resident_id)s
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s

-- name: resident_rekey_batch
-- The next records past after_id wrapped by a key other than the current one, locked
-- until the batch commits so no update can slip a new data key in between reading and
-- rewrapping; rows a live writer holds are skipped rather than waited for.
SELECT id, personal_key_id, personal_wrapped_key, personal_ciphertext
FROM residents
WHERE id > %(after_id)s AND personal_key_id <> %(current)s
ORDER BY id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: resident_rewrap
-- Only the wrapped data key and its key id change: the ciphertext (and updated_at,
-- since the data did not change) stay as they are.
UPDATE residents r
SET personal_key_id = %(key_id)s, personal_wrapped_key = v.wrapped_key
FROM unnest(%(ids)s::bigint[], %(wrapped_keys)s::bytea[]) AS v (id, wrapped_key)
WHERE r.id = v.id

-- name: resident_stale_count
-- Records still wrapped by a key other than the current one.
SELECT count(*) FROM residents WHERE personal_key_id <> %(current)s

-- name: resident_open_incident_of_actor
-- An open incident claimed by actor about this resident: a resident-scoped incident
-- naming them, or a device-scoped one (a fall, an SOS press) from a device bound to
-- them. Building-scoped incidents (a fire) open resident-scoped ones for the residents
-- who need help, so they are covered by the first case. The newest if several.
SELECT i.id
FROM incidents i
LEFT JOIN devices d ON d.id = i.device_id AND i.scope = 'device'
WHERE i.status IN ('claimed', 'acknowledged', 'dispatched')
  AND i.claimed_by = %(actor)s
  AND (i.resident_id = %(resident_id)s OR d.resident_id = %(resident_id)s)
ORDER BY i.id DESC
LIMIT 1

-- name: resident_of_incident
-- The resident an incident within the scope is about, as resident_open_incident_of_actor
-- reckons it: named by the incident, or wearing its device. With claimed_by, only while
-- the incident is open (claimed, acknowledged or dispatched) and claimed by that actor.
-- No row when the incident is out of reach or fails that; a NULL when it is about no one.
SELECT coalesce(i.resident_id, d.resident_id)
FROM incidents i
LEFT JOIN devices d ON d.id = i.device_id AND i.scope = 'device'
WHERE i.id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR i.community_id = ANY (%(scope)s::bigint[]))
  AND (%(claimed_by)s::text IS NULL
       OR (i.claimed_by = %(claimed_by)s::text
           AND i.status IN ('claimed', 'acknowledged', 'dispatched')))
