-- How readings are kept over time (cloud/storage/timeseries.py, docs/storage.md):
-- detection, the plain path's maintenance, the TimescaleDB path's setup, and the
-- queries the readings API runs on either.

-- name: timeseries_catalogue
-- What decides the path: TimescaleDB installed in this database or available to the
-- server, what `readings` and `readings_hourly` are ('p' partitioned table, 'r' table or
-- hypertable, 'v' view such as a continuous aggregate), shared_buffers in bytes, whether
-- the server preloads TimescaleDB (without it CREATE EXTENSION answers FATAL and closes
-- the connection; pg_settings hides the setting from roles without pg_read_all_settings,
-- and then it is taken as preloaded and such a FATAL reported plainly), and whether the continuous aggregate still awaits its first full
-- refresh (readings_rollup_unrefreshed, made with it and dropped by that refresh).
SELECT
    EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') AS installed,
    EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb') AS available,
    (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('readings')) AS readings_kind,
    (SELECT relkind::text FROM pg_class WHERE oid = to_regclass('readings_hourly')) AS rollup_kind,
    pg_size_bytes(current_setting('shared_buffers')) AS shared_buffers,
    coalesce(
        (
            SELECT bool_or(regexp_replace(trim(lib), '^.*/|"', '', 'g') = 'timescaledb')
            FROM pg_settings,
                 unnest(string_to_array(setting, ',')) AS lib
            WHERE name = 'shared_preload_libraries'
        ),
        true
    ) AS preloaded,
    to_regclass('readings_rollup_unrefreshed') IS NOT NULL AS rollup_unrefreshed

-- name: partitions_ahead
-- Monthly partitions from the month holding the retention cutoff (last month at the
-- earliest) to `ahead` months after this one; returns how many were created. Starting
-- at the cutoff keeps a short retention from creating a month it would drop at once.
WITH s AS (
    SELECT greatest(now() - interval '1 month', now() - %(retention)s::interval) AS start_at
)
SELECT readings_ensure_partitions(
    start_at,
    %(ahead)s + 1 + (date_trunc('month', start_at AT TIME ZONE 'UTC')
                     < date_trunc('month', now() AT TIME ZONE 'UTC'))::int
)
FROM s

-- name: maintenance_lock_timeout
-- Dropping a partition locks `readings`; waiting long for that lock would queue every
-- writer behind it, so a busy table fails the step and the next round tries again.
SELECT set_config('lock_timeout', %(timeout)s, true)

-- name: rollup_claim
-- Locks the fold's state; no row means another process is folding right now.
SELECT true FROM readings_rollup_state FOR UPDATE SKIP LOCKED

-- name: rollup_safe_until
-- The new watermark: every reading stamped before it is committed, so a fold up to it
-- misses nothing. received_at is its transaction's start (now()), so a transaction
-- still open has stamped nothing earlier than its xact_start, and one that ended before
-- this statement is visible to the next. Must run after the statement that began this
-- transaction (now() is then earlier than this read of pg_stat_activity). `margin`
-- covers a writer caught between taking its start time and showing it here. `hidden`
-- counts sessions whose start this role may not see (see docs/storage.md).
SELECT
    least(
        now() - %(margin)s::interval,
        min(xact_start) FILTER (WHERE backend_type IS DISTINCT FROM 'autovacuum worker')
    ) AS until,
    count(*) FILTER (WHERE query = '<insufficient privilege>') AS hidden
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()

-- name: rollup_fold
-- Adds the readings received in [watermark, until) to their hours. Each reading falls
-- in exactly one such range, so adding is exact (a sum of sums may differ from a fresh
-- sum in the last bits of a double). Empty when `until` is not past the watermark.
INSERT INTO readings_hourly AS h
    (device_id, metric, bucket, value_count, value_sum, value_min, value_max)
SELECT device_id, metric, date_bin('1 hour', ts, timestamptz '2000-01-01 00:00:00+00'),
       count(*), sum(value), min(value), max(value)
FROM readings
WHERE received_at >= (SELECT watermark FROM readings_rollup_state)
  AND received_at < %(until)s
GROUP BY 1, 2, 3
ON CONFLICT (device_id, metric, bucket) DO UPDATE SET
    value_count = h.value_count + EXCLUDED.value_count,
    value_sum = h.value_sum + EXCLUDED.value_sum,
    value_min = least(h.value_min, EXCLUDED.value_min),
    value_max = greatest(h.value_max, EXCLUDED.value_max)

-- name: rollup_advance
-- Never backwards (a wall clock stepped back must not fold a range twice).
UPDATE readings_rollup_state
SET watermark = greatest(watermark, %(until)s), folded_at = now()

-- name: retention_drop_partitions
SELECT readings_drop_partitions(now() - %(retention)s::interval)

-- name: retention_default_rows
-- Expired rows parked in the DEFAULT partition (a backlog older than any partition).
DELETE FROM readings_default WHERE ts < now() - %(retention)s::interval

-- name: retention_rollup_rows
DELETE FROM readings_hourly WHERE bucket < now() - %(retention)s::interval

-- name: timescale_create_extension
CREATE EXTENSION IF NOT EXISTS timescaledb

-- name: timescale_lock_readings
-- Ingest waits while readings changes shape; it resumes on the hypertable.
LOCK TABLE readings IN ACCESS EXCLUSIVE MODE

-- name: timescale_set_aside_partitioned
ALTER TABLE readings RENAME TO readings_partitioned

-- name: timescale_create_table
-- Same columns, order, types, NOT NULLs and defaults as the partitioned table.
CREATE TABLE readings (LIKE readings_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)

-- name: timescale_create_hypertable
-- Only the (device_id, metric, ts) index below: the default time index would cost
-- every COPY for queries Anju does not make.
SELECT create_hypertable(
    'readings',
    by_range('ts', %(chunk_interval)s::interval),
    create_default_indexes => false
)

-- name: timescale_move_rows
INSERT INTO readings SELECT * FROM readings_partitioned

-- name: timescale_drop_partitioned
-- Takes its partitions and their indexes with it.
DROP TABLE readings_partitioned

-- name: timescale_create_index
CREATE INDEX readings_device_metric_ts ON readings (device_id, metric, ts)

-- name: timescale_drop_partition_functions
DROP FUNCTION readings_ensure_partitions(timestamptz, integer),
              readings_drop_partitions(timestamptz)

-- name: timescale_enable_compression
-- Segments per device and metric, the way every query filters; ordered by time within.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id, metric',
    timescaledb.compress_orderby = 'ts'
)

-- name: timescale_set_aside_rollup
-- The plain rollup table gives way to the continuous aggregate. Rows in it may be older
-- than any raw reading left to recompute them from, so a non-empty table is kept
-- under another name rather than dropped.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM readings_hourly) THEN
        ALTER TABLE readings_hourly RENAME TO readings_hourly_before_timescaledb;
    ELSE
        DROP TABLE readings_hourly;
    END IF;
    DROP TABLE readings_rollup_state;
END
$$

-- name: timescale_create_rollup
-- The hourly rollup as a continuous aggregate with the plain table's columns, so the
-- readings API runs the same query on either path. Real-time (materialized_only off):
-- hours not materialized yet are aggregated from readings when queried.
CREATE MATERIALIZED VIEW readings_hourly
WITH (
    timescaledb.continuous,
    timescaledb.materialized_only = false,
    timescaledb.create_group_indexes = false
) AS
SELECT device_id,
       metric,
       time_bucket(INTERVAL '1 hour', ts) AS bucket,
       count(*) AS value_count,
       sum(value) AS value_sum,
       min(value) AS value_min,
       max(value) AS value_max
FROM readings
GROUP BY device_id, metric, time_bucket(INTERVAL '1 hour', ts)
WITH NO DATA

-- name: timescale_create_rollup_index
CREATE INDEX readings_hourly_device_metric_bucket ON readings_hourly (device_id, metric, bucket)

-- name: timescale_rollup_horizon
-- The real-time aggregate is complete at every hour but those late readings reached
-- after their hour was materialized (readings_late_hours, migration 0017): the API
-- reads from the oldest of those on from readings, until maintenance refreshes them.
CREATE OR REPLACE FUNCTION readings_rollup_horizon()
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT coalesce(min(bucket), timestamptz 'infinity') FROM readings_late_hours
$$

-- name: timescale_mark_rollup_unrefreshed
-- Made with the continuous aggregate: until timescale_rollup_refreshed drops it, a later
-- anju cloud migrate knows the first full refresh is still owed (it may have failed
-- after the conversion committed).
CREATE TABLE readings_rollup_unrefreshed (since timestamptz NOT NULL DEFAULT now())

-- name: timescale_refresh_rollup
-- Materializes every hour of the readings moved in; cannot run inside a transaction.
CALL refresh_continuous_aggregate('readings_hourly', NULL, NULL)

-- name: timescale_rollup_refreshed
DROP TABLE IF EXISTS readings_rollup_unrefreshed

-- name: late_hours
-- The hours to refresh, with the instant from which a note counts as settled: its
-- writer began over five minutes before this round, and ingest's transactions last
-- seconds, so its readings are committed and the refresh below sees them. Hours older
-- than the raw retention are left out: their chunks may be dropped, and refreshing an
-- hour without its raw rows would delete the aggregate's history of it.
SELECT bucket, now() - INTERVAL '5 minutes' AS settled
FROM readings_late_hours
WHERE bucket >= now() - %(retention)s::interval
ORDER BY bucket

-- name: forget_expired_late_hours
DELETE FROM readings_late_hours WHERE bucket < now() - %(retention)s::interval

-- name: timescale_refresh_hours
-- Cannot run inside a transaction; [start, end) is whole hours.
CALL refresh_continuous_aggregate('readings_hourly', %(start)s, %(end)s)

-- name: forget_late_hours
-- Hours refreshed whose every note had settled; one noted again since stays for the
-- next round.
DELETE FROM readings_late_hours
WHERE bucket = ANY(%(hours)s::timestamptz[]) AND noted_at < %(settled)s

-- name: forget_all_late_hours
-- The plain path folds late readings by arrival and needs no notes.
DELETE FROM readings_late_hours

-- name: timescale_see_root_table
-- With timescaledb.restoring on for the transaction, ONLY readings reads the
-- hypertable's own (root) table, which queries of readings never read: rows land there
-- only from a COPY that started before readings became a hypertable (the writer locks
-- readings first so that ingest's cannot; ingest.sql, lock_readings_for_copy).
SELECT set_config('timescaledb.restoring', %(on)s, true)

-- name: timescale_root_rows_exist
SELECT EXISTS (SELECT 1 FROM ONLY readings)

-- name: timescale_lock_root_table
-- Holds off writers while stray rows move, so none arrives between the copy and the
-- delete below (only ever taken when there are stray rows).
LOCK TABLE readings IN EXCLUSIVE MODE

-- name: timescale_take_root_rows
CREATE TEMPORARY TABLE readings_stray ON COMMIT DROP AS SELECT * FROM ONLY readings

-- name: timescale_clear_root_rows
DELETE FROM ONLY readings

-- name: timescale_put_root_rows
-- With restoring off again, so the rows are routed to their chunks.
INSERT INTO readings SELECT * FROM readings_stray

-- name: timescale_chunk_interval
-- For chunks created from now on; existing chunks keep theirs.
SELECT set_chunk_time_interval('readings', %(chunk_interval)s::interval)

-- name: timescale_remove_compression_policy
SELECT remove_compression_policy('readings', if_exists => true)

-- name: timescale_add_compression_policy
SELECT add_compression_policy('readings', compress_after => %(compress_after)s::interval)

-- name: timescale_remove_retention_policy
SELECT remove_retention_policy('readings', if_exists => true)

-- name: timescale_add_retention_policy
SELECT add_retention_policy('readings', drop_after => %(drop_after)s::interval)

-- name: timescale_remove_rollup_policy
SELECT remove_continuous_aggregate_policy('readings_hourly', if_exists => true)

-- name: timescale_add_rollup_policy
-- Refreshes the late-arrival window (plus two hours, so the window always spans the
-- two buckets a policy needs), leaving the current hour to real-time aggregation.
SELECT add_continuous_aggregate_policy(
    'readings_hourly',
    start_offset => %(start_offset)s::interval,
    end_offset => INTERVAL '1 hour',
    schedule_interval => %(schedule)s::interval
)

-- name: timescale_remove_rollup_retention
SELECT remove_retention_policy('readings_hourly', if_exists => true)

-- name: timescale_add_rollup_retention
SELECT add_retention_policy('readings_hourly', drop_after => %(drop_after)s::interval)

-- name: device_known
-- Whether the device is registered behind a gateway of the scope.
SELECT EXISTS (
    SELECT 1 FROM devices d JOIN gateways g ON g.id = d.gateway_id
    WHERE d.id = %(device)s
      AND (%(scope)s::bigint[] IS NULL OR g.community_id = ANY(%(scope)s::bigint[]))
)

-- name: rollup_horizon
-- readings_rollup_horizon() within [start, end] (it may be an infinity): hours of the
-- window before it are read from the rollup, the rest from readings.
SELECT least(greatest(readings_rollup_horizon(), %(start)s), %(end)s)

-- name: readings_raw
-- One more row than asked for, so the caller can tell the answer was cut short.
SELECT ts, value
FROM readings
WHERE device_id = %(device)s AND metric = %(metric)s AND ts >= %(start)s AND ts < %(end)s
ORDER BY ts
LIMIT %(limit)s

-- name: readings_buckets_raw
-- Buckets of `width` counted from `start`, aggregated from readings.
SELECT date_bin(%(width)s, ts, %(start)s) AS start,
       count(*) AS count, min(value) AS min, avg(value) AS avg, max(value) AS max
FROM readings
WHERE device_id = %(device)s AND metric = %(metric)s AND ts >= %(start)s AND ts < %(end)s
GROUP BY 1
ORDER BY 1

-- name: readings_buckets_rollup
-- Buckets of `width` (whole hours) counted from `start` (a whole hour): hours before
-- `horizon` from readings_hourly, the rest from readings. Both sides give hourly
-- count, sum, min and max, which combine exactly into any number of hours.
WITH hours AS (
    SELECT bucket, value_count, value_sum, value_min, value_max
    FROM readings_hourly
    WHERE device_id = %(device)s AND metric = %(metric)s
      AND bucket >= %(start)s AND bucket < %(horizon)s
    UNION ALL
    SELECT date_bin('1 hour', ts, %(start)s), count(*), sum(value), min(value), max(value)
    FROM readings
    WHERE device_id = %(device)s AND metric = %(metric)s
      AND ts >= %(horizon)s AND ts < %(end)s
    GROUP BY 1
)
SELECT date_bin(%(width)s, bucket, %(start)s) AS start,
       sum(value_count)::bigint AS count,
       min(value_min) AS min,
       sum(value_sum) / sum(value_count) AS avg,
       max(value_max) AS max
FROM hours
GROUP BY 1
ORDER BY 1
