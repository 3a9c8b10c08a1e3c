-- Hours that readings arrived late for (more than an hour after their time), noted by
-- the ingest writer in the transaction that stores them. The TimescaleDB path needs
-- them: its refresh policy only ever refreshes a window near now, so without this a
-- reading older than that window would never reach the continuous aggregate, and the
-- 1h and 1d answers would miss it for good. The maintenance round refreshes exactly
-- these hours and forgets them; until then readings_rollup_horizon() stops at the
-- oldest of them, so the API reads those hours from readings. The plain path folds
-- late readings by arrival anyway; its rounds just forget them.
--
-- noted_at is the writer's transaction start: a round forgets an hour only once every
-- note of it is old enough that the writer has committed (cloud/storage/timeseries.py).
CREATE TABLE readings_late_hours (
    bucket    timestamptz PRIMARY KEY,
    noted_at  timestamptz NOT NULL DEFAULT now()
);
