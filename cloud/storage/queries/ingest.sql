-- name: gateway_for_ingest
-- The gateway's community path and status, to check a batch's topic and header.
SELECT c.path AS community, g.status
FROM gateways g
JOIN communities c ON c.id = g.community_id
WHERE g.id = %(gateway)s

-- name: record_batch
-- Returns a row only the first time a batch is seen: a resent batch yields none.
INSERT INTO ingested_batches (gateway_id, spool_epoch, channel, batch_seq, item_count)
VALUES (%(gateway)s, %(spool_epoch)s, %(channel)s, %(batch_seq)s, %(item_count)s)
ON CONFLICT DO NOTHING
RETURNING received_at

-- name: devices_for_ingest
-- Registration of every device a batch names, with what the rules need to know.
SELECT d.id, d.gateway_id, d.kind, d.status, d.building, d.unit, g.community_id
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
WHERE d.id = ANY(%(devices)s)

-- name: copy_readings
COPY readings (ts, device_id, metric, value, gateway_id, seq) FROM STDIN (FORMAT BINARY)

-- name: insert_event
INSERT INTO events (ts, device_id, gateway_id, seq, type, severity, data)
VALUES (%(ts)s, %(device)s, %(gateway)s, %(seq)s, %(type)s, %(severity)s, %(data)s::jsonb)
RETURNING id

-- name: touch_devices
-- last_seen never moves backwards, nor past the server's clock (a device clock far
-- ahead must not make a silent device look alive).
UPDATE devices AS d
SET last_seen = GREATEST(d.last_seen, LEAST(seen.ts, now()))
FROM unnest(%(devices)s::text[], %(seen)s::timestamptz[]) AS seen (id, ts)
WHERE d.id = seen.id

-- name: touch_gateway
UPDATE gateways SET last_seen = now() WHERE id = %(gateway)s

-- name: insert_quarantine
INSERT INTO quarantine (topic, gateway_id, reason, payload, payload_size)
VALUES (%(topic)s, %(gateway)s, %(reason)s, %(payload)s, %(payload_size)s)
