"""PostgreSQL storage: numbered migrations, named SQL queries, error translation.

Modules:
    migrate   -- ``apply_migrations``: run each ``migrations/NNNN_*.sql`` once, in order
    sql       -- the loader of ``queries/*.sql`` (``-- name: xyz`` blocks)
    database  -- translating psycopg errors into ``StorageError`` where they enter
    pool      -- ``open_pool``: the async connection pool of an app
    timeseries -- how readings are kept over time: TimescaleDB or partitions, the
                  hourly rollup, retention (docs/storage.md)

Schema (docs/design.md section 6) as of this slice: communities, gateways, devices,
readings (range-partitioned by month plus a DEFAULT partition, or a TimescaleDB
hypertable), readings_hourly (a table folded by the maintenance round, or a
continuous aggregate), ingested_batches, events, incidents, incident_events,
incident_log, quarantine.
"""
