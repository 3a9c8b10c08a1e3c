-- What ingest learns about a batch beyond its key (issue 16).
--
-- digest: sha256 of the payload as received. A batch resent under a stored key is
-- a duplicate only when its digest matches; with another digest it is a conflict
-- (a gateway restored from an old disk image reuses sequence numbers), quarantined
-- and refused to the gateway instead of dropped in silence. Rows written before this
-- column existed hold NULL: their content cannot be told, so a resend counts as a
-- duplicate, as it did.
ALTER TABLE ingested_batches ADD COLUMN digest bytea;

-- clock_skew: the device's time was outside the window ingest believes (settings
-- ANJU_INGEST_CLOCK_PAST_S and ANJU_INGEST_CLOCK_FUTURE_S around the time of
-- receipt), so ts is the time of receipt instead. On readings the column is nullable
-- with no default (NULL is false): adding it rewrites nothing, on the native
-- partitions or on a TimescaleDB hypertable with compressed chunks, and the COPY of
-- ordinary readings does not name it. Events keep the device's claimed time in
-- device_ts (NULL when ts is the device's own).
ALTER TABLE readings ADD COLUMN clock_skew boolean;
ALTER TABLE events
    ADD COLUMN clock_skew boolean NOT NULL DEFAULT false,
    ADD COLUMN device_ts timestamptz;
