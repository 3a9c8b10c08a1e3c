-- name: gateways_for_ingest
-- Each named gateway's community path and status, to check batches' topics and headers,
-- and its community's id, for an incident about the gateway itself (its clock).
SELECT g.id, c.path AS community, g.status, g.community_id
FROM gateways g
JOIN communities c ON c.id = g.community_id
WHERE g.id = ANY(%(gateways)s)

-- name: record_batches
-- Returns the keys seen for the first time: a resent batch's key is not returned.
INSERT INTO ingested_batches (gateway_id, spool_epoch, channel, batch_seq, item_count, digest)
SELECT * FROM unnest(
    %(gateways)s::text[], %(epochs)s::text[], %(channels)s::text[],
    %(seqs)s::bigint[], %(counts)s::integer[], %(digests)s::bytea[]
)
ON CONFLICT DO NOTHING
RETURNING gateway_id, spool_epoch, channel, batch_seq

-- name: batch_digests
-- The stored digests of keys record_batches did not insert (resends), to tell a
-- duplicate from a conflict. A statement of its own, after record_batches: its
-- snapshot sees a key that a concurrent group committed while record_batches waited
-- on it, which a CTE of the inserting statement would not. NULL: stored before
-- migration 0018, content unknown.
SELECT b.gateway_id, b.spool_epoch, b.channel, b.batch_seq, b.digest
FROM unnest(
    %(gateways)s::text[], %(epochs)s::text[], %(channels)s::text[], %(seqs)s::bigint[]
) AS k (gateway_id, spool_epoch, channel, batch_seq)
JOIN ingested_batches b USING (gateway_id, spool_epoch, channel, batch_seq)

-- name: devices_out_of_place
-- Of the (device, gateway) pairs a group names, those that may not be stored: the
-- device is unknown, registered behind another gateway, or not active. Usually none,
-- so a group costs one round trip here however many devices it names.
SELECT pair ->> 0 AS device, pair ->> 1 AS gateway, d.gateway_id, d.status
FROM json_array_elements(%(pairs)s::json) AS pair
LEFT JOIN devices d ON d.id = pair ->> 0
WHERE d.id IS NULL OR d.gateway_id <> pair ->> 1 OR d.status <> 'active'

-- name: devices_for_rules
-- What the rules need to know of the devices whose events a group stores.
SELECT d.id, d.kind, g.community_id, c.path, d.building, d.unit
FROM devices d
JOIN gateways g ON g.id = d.gateway_id
JOIN communities c ON c.id = g.community_id
WHERE d.id = ANY(%(devices)s)

-- name: lock_readings_for_copy
-- Before copy_readings, in its transaction. TimescaleDB decides how to route a COPY
-- when the statement starts, before it waits for its lock: a COPY queued behind
-- anju cloud migrate rebuilding readings as a hypertable would then write into the
-- hypertable's root table, which no query reads (issue 17, defect 1). This LOCK waits
-- instead, finds the new readings by name once it is free, and the COPY after it is
-- routed to the chunks. ROW EXCLUSIVE is what the COPY takes anyway; ONLY, or it
-- would lock every partition or chunk too (thousands, and waiting on compression).
LOCK TABLE ONLY readings IN ROW EXCLUSIVE MODE

-- name: copy_readings
-- Device, metric and ts first: the writer sorts rows as tuples, in index order.
COPY readings (device_id, metric, ts, value, gateway_id, seq) FROM STDIN (FORMAT BINARY)

-- name: copy_skewed_readings
-- Readings whose own time was implausible, at their time of receipt (migration 0018);
-- a COPY of their own, so the ordinary COPY stays as narrow as before.
COPY readings (device_id, metric, ts, value, gateway_id, seq, clock_skew)
FROM STDIN (FORMAT BINARY)

-- name: note_late_hours
-- The hours of readings more than an hour old (migration 0017 says why); the writer
-- runs it only for a group holding such a reading.
INSERT INTO readings_late_hours AS late (bucket)
SELECT DISTINCT date_bin('1 hour', ts, timestamptz '2000-01-01 00:00:00+00')
FROM unnest(%(ts)s::timestamptz[]) AS ts
WHERE ts < now() - INTERVAL '1 hour'
ORDER BY 1  -- rows locked in one order by every writer
ON CONFLICT (bucket) DO UPDATE SET noted_at = greatest(late.noted_at, EXCLUDED.noted_at)

-- name: draw_event_ids
-- Ids for a group's events, drawn before they are inserted (the writer says why).
SELECT nextval(pg_get_serial_sequence('events', 'id'))
FROM generate_series(1, %(count)s)

-- name: insert_event
-- id: drawn by draw_event_ids. device_ts: the device's own time when ts is the time of
-- receipt (clock_skew).
INSERT INTO events (id, ts, device_id, gateway_id, seq, type, severity, data, clock_skew, device_ts)
OVERRIDING SYSTEM VALUE
VALUES (
    %(id)s, %(ts)s, %(device)s, %(gateway)s, %(seq)s, %(type)s, %(severity)s, %(data)s::jsonb,
    %(clock_skew)s, %(device_ts)s
)

-- name: touch_devices
-- last_seen never moves backwards, nor past the server's clock (a device clock far
-- ahead must not make a silent device look alive), and moves only in steps of at
-- least %(step_s)s seconds: a row written per device and group would cost more than
-- the readings' COPY, while offline rules count in minutes. Only rows due a step are
-- locked, in id order and SKIP LOCKED: a row another worker is touching is left to it,
-- so workers never wait on each other here, let alone deadlock. The id array (sorted,
-- ids need no quoting) lets the primary key find the rows.
WITH seen AS (
    SELECT key AS id, LEAST(value::timestamptz, now()) AS ts
    FROM json_each_text(%(seen)s::json)
),
due AS (
    SELECT d.id, seen.ts
    FROM devices d
    JOIN seen ON seen.id = d.id
    WHERE d.id = ANY(%(ids)s::text[])
      AND (d.last_seen IS NULL OR seen.ts >= d.last_seen + make_interval(secs => %(step_s)s))
    ORDER BY d.id
    FOR NO KEY UPDATE OF d SKIP LOCKED
)
UPDATE devices AS d SET last_seen = due.ts FROM due WHERE d.id = due.id

-- name: touch_gateways
WITH due AS (
    SELECT id FROM gateways
    WHERE id = ANY(%(gateways)s)
      AND (last_seen IS NULL OR now() >= last_seen + make_interval(secs => %(step_s)s))
    ORDER BY id
    FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE gateways AS g SET last_seen = now() FROM due WHERE g.id = due.id

-- name: insert_quarantine
INSERT INTO quarantine (topic, gateway_id, reason, payload, payload_size)
VALUES (%(topic)s, %(gateway)s, %(reason)s, %(payload)s, %(payload_size)s)
