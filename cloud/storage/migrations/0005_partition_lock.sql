-- Moving a month's rows out of DEFAULT and attaching the new partition must not let a
-- reading land in DEFAULT in between: ATTACH would then fail with "updated partition
-- constraint for default partition would be violated", exactly when a month with no
-- partition is filling up under load. Lock DEFAULT against writes for the move; a
-- writer waits a moment rather than failing.
CREATE OR REPLACE FUNCTION readings_ensure_partitions(start_at timestamptz, months integer)
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
            LOCK TABLE readings_default IN SHARE ROW EXCLUSIVE MODE;
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
