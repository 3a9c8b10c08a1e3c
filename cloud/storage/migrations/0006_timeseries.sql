-- How readings are kept over time without TimescaleDB: an hourly rollup folded in by the
-- storage maintenance round, and retention by whole partitions (cloud/storage/timeseries.py,
-- docs/storage.md). When TimescaleDB is used, `anju cloud migrate` replaces the rollup
-- table, its state and these functions with a hypertable and a continuous aggregate.

-- When the row's transaction began, stamped by the database (COPY does not name the
-- column). The rollup folds rows in by this stamp, not by ts, which is how a reading
-- that arrives days late still reaches its hour. Rows are appended in arrival order,
-- so a BRIN index finds the ones received since the last fold without the cost of a
-- B-tree on the write path (docs/storage.md has the measurement); autosummarize has
-- autovacuum summarise each block range as it fills. Writers must never set the
-- column themselves: the fold's correctness rests on it being the transaction start.
ALTER TABLE readings ADD COLUMN received_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX readings_received_at ON readings
    USING brin (received_at) WITH (autosummarize = on);

-- Per device, metric and UTC hour: count, sum, min and max. Sum and count rather than
-- an average, so hours combine exactly into days and a fold can add to an hour.
CREATE TABLE readings_hourly (
    device_id    text NOT NULL,
    metric       text NOT NULL,
    bucket       timestamptz NOT NULL,
    value_count  bigint NOT NULL CHECK (value_count > 0),
    value_sum    double precision NOT NULL,
    value_min    double precision NOT NULL,
    value_max    double precision NOT NULL,
    PRIMARY KEY (device_id, metric, bucket)
);
CREATE INDEX readings_hourly_bucket ON readings_hourly (bucket);

-- Every reading with received_at before the watermark is in readings_hourly, and none
-- after it. One row; the fold locks it, so folds from several processes take turns.
CREATE TABLE readings_rollup_state (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    watermark  timestamptz NOT NULL,
    folded_at  timestamptz
);
INSERT INTO readings_rollup_state (watermark) VALUES ('-infinity');

-- Hours before this instant are served from readings_hourly, later ones from readings:
-- the start of the UTC hour holding the watermark. TimescaleDB's setup replaces it.
CREATE FUNCTION readings_rollup_horizon()
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN isfinite(watermark)
            THEN date_bin('1 hour', watermark, timestamptz '2000-01-01 00:00:00+00')
        ELSE watermark
    END
    FROM readings_rollup_state
$$;

-- Drop the monthly partitions (made by readings_ensure_partitions, named readings_YYYY_MM
-- after their UTC month) that end at or before `cutoff`; returns their names. Never the
-- DEFAULT partition: its expired rows are deleted instead.
CREATE FUNCTION readings_drop_partitions(cutoff timestamptz)
RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    part record;
    upper_bound timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('anju.readings_ensure_partitions'));
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'readings'::regclass
          AND c.relname ~ '^readings_[0-9]{4}_[0-9]{2}$'
        ORDER BY c.relname
    LOOP
        upper_bound := (
            make_timestamp(substr(part.relname, 10, 4)::int, substr(part.relname, 15, 2)::int,
                           1, 0, 0, 0)
            + interval '1 month'
        ) AT TIME ZONE 'UTC';
        IF upper_bound <= cutoff THEN
            EXECUTE format('DROP TABLE %I', part.relname);
            RETURN NEXT part.relname;
        END IF;
    END LOOP;
END
$$;
