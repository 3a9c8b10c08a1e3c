-- Telemetry. Deduplication is per batch (ingested_batches, written in the same
-- transaction as the rows), so readings carry no unique index and COPY runs at full
-- speed. Native monthly range partitions stand in for a TimescaleDB hypertable; the
-- DEFAULT partition catches timestamps outside the months created so far (a gateway's
-- backlog from long ago, a device clock far in the future). History tables keep ids
-- without foreign keys, so removing a device never has to rewrite its history.

CREATE TABLE readings (
    ts          timestamptz NOT NULL,
    device_id   text NOT NULL,
    metric      text NOT NULL,
    value       double precision NOT NULL,
    gateway_id  text NOT NULL,
    seq         bigint NOT NULL
) PARTITION BY RANGE (ts);

CREATE INDEX readings_device_metric_ts ON readings (device_id, metric, ts);

CREATE TABLE readings_default PARTITION OF readings DEFAULT;

-- Create the monthly partitions (UTC months) covering `months` months from the one
-- holding `start_at`; returns how many were created. Rows already sitting in the
-- DEFAULT partition for a new month are moved into it, so the function is safe to
-- call at any time and any number of times (it serialises itself with a lock).
CREATE FUNCTION readings_ensure_partitions(start_at timestamptz, months integer)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    lower_bound timestamptz := date_trunc('month', start_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    upper_bound timestamptz;
    partition_name text;
    created integer := 0;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('anju.readings_ensure_partitions'));
    FOR i IN 1 .. months LOOP
        upper_bound := ((lower_bound AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
        partition_name := 'readings_' || to_char(lower_bound AT TIME ZONE 'UTC', 'YYYY_MM');
        IF to_regclass(quote_ident(partition_name)) IS NULL THEN
            EXECUTE format('CREATE TABLE %I (LIKE readings INCLUDING DEFAULTS)', partition_name);
            EXECUTE format(
                'WITH moved AS (DELETE FROM readings_default WHERE ts >= %L AND ts < %L RETURNING *) '
                'INSERT INTO %I SELECT * FROM moved',
                lower_bound, upper_bound, partition_name);
            EXECUTE format(
                'ALTER TABLE readings ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                partition_name, lower_bound, upper_bound);
            created := created + 1;
        END IF;
        lower_bound := upper_bound;
    END LOOP;
    RETURN created;
END
$$;

-- One row per batch ingested, keyed as the edge seals it; written in the batch's
-- transaction, so a batch resent after a lost PUBACK is recognised and skipped.
CREATE TABLE ingested_batches (
    gateway_id   text NOT NULL,
    spool_epoch  text NOT NULL,
    channel      text NOT NULL CHECK (channel IN ('telemetry', 'events')),
    batch_seq    bigint NOT NULL,
    item_count   integer NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, spool_epoch, channel, batch_seq)
);
