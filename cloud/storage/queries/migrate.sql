-- name: migrations_lock
-- Session-level advisory lock serialising migration runs across processes.
SELECT pg_advisory_lock(%(key)s)

-- name: migrations_unlock
SELECT pg_advisory_unlock(%(key)s)

-- name: migrations_lock_timeout
-- Bounds the wait for the lock above (and for table locks a migration takes).
SELECT set_config('lock_timeout', %(timeout)s, false)

-- name: migrations_table
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL UNIQUE,
    checksum    text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)

-- name: migrations_applied
SELECT version, name, checksum FROM schema_migrations ORDER BY version

-- name: migrations_record
INSERT INTO schema_migrations (version, name, checksum)
VALUES (%(version)s, %(name)s, %(checksum)s)
