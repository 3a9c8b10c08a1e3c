-- name: device_tests_request
-- A test of %(device)s through its gateway, asked by key %(key_id)s, that expires
-- %(timeout_s)s seconds from now. Inserted only while the device is active and behind
-- an active gateway (and behind %(gateway)s when that is not NULL); no row back means
-- one of those does not hold (device_tests_refusal says which).
INSERT INTO device_tests (device_id, gateway_id, requested_by, expires_at)
SELECT d.id, d.gateway_id, %(key_id)s, now() + make_interval(secs => %(timeout_s)s)
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
WHERE d.id = %(device)s
  AND d.status = 'active'
  AND g.status = 'active'
  AND (%(gateway)s::text IS NULL OR d.gateway_id = %(gateway)s::text)
RETURNING id, device_id AS device, gateway_id AS gateway, requested_at, expires_at

-- name: device_tests_refusal
-- Why device_tests_request inserted nothing for %(device)s: its status, its gateway's
-- id and status.
SELECT d.status AS device_status, d.gateway_id AS gateway, g.status AS gateway_status
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
WHERE d.id = %(device)s

-- name: device_tests_get
-- One request as it stands; finished_at is NULL until the gateway's answer is recorded.
SELECT id, device_id AS device, gateway_id AS gateway, requested_at, expires_at, sent_at,
       finished_at, ok, detail, data
FROM device_tests
WHERE id = %(id)s

-- name: device_tests_claim
-- Up to %(limit)s requests not yet sent and not expired, oldest first, each stamped
-- sent_at = now() and returned with what its command needs. Run it in the transaction
-- that publishes them: SKIP LOCKED lets other pushers pass by, and a failed publish
-- rolls the claim back, leaving the request to the next round until it expires.
WITH due AS (
    SELECT t.id
    FROM device_tests t
    WHERE t.sent_at IS NULL
      AND t.expires_at > now()
    ORDER BY t.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE device_tests t
SET sent_at = now()
FROM due, gateways g, communities c
WHERE t.id = due.id
  AND g.id = t.gateway_id
  AND c.id = g.community_id
RETURNING t.id, t.device_id AS device, t.gateway_id AS gateway, c.path AS community,
          t.sent_at, t.expires_at

-- name: device_tests_record
-- The answer of %(gateway)s (under %(community)s) to the read of request %(id)s. Only
-- the first is recorded: a repeat (QoS 1 redelivery, a second pusher hearing it) finds
-- the row finished and changes nothing.
UPDATE device_tests t
SET finished_at = now(), ok = %(ok)s, detail = %(detail)s, data = %(data)s
FROM gateways g, communities c
WHERE t.id = %(id)s
  AND t.finished_at IS NULL
  AND g.id = t.gateway_id AND g.id = %(gateway)s
  AND c.id = g.community_id AND c.path = %(community)s
