"""PostgreSQL storage: numbered migrations, named SQL queries, error translation.

Modules:
    migrate   -- ``apply_migrations``: run each ``migrations/NNNN_*.sql`` once, in order
    sql       -- the loader of ``queries/*.sql`` (``-- name: xyz`` blocks)
    database  -- translating psycopg errors into ``StorageError`` where they enter
    pool      -- ``open_pool``: the async connection pool of an app

Schema (DESIGN.md section 6) as of this slice: communities, gateways, devices,
readings (range-partitioned by month, plus a DEFAULT partition), ingested_batches,
events, incidents, incident_events, incident_log, quarantine.
"""
