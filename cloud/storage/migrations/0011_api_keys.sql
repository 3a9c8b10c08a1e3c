-- API keys, and the community tree as people manage it.
--
-- A key is shown once, when it is made; the table keeps only its SHA-256 (the secret is
-- 256 random bits, so a slow password hash would add nothing but latency) and the
-- public `prefix` that finds the row. A key belongs to one person or tool (`name`,
-- which is the actor the emergency queue records), has one role, and reaches one
-- subtree of the community tree: `scope_id` is the subtree's root node, NULL only for
-- an admin key that reaches the whole tree (the first key of a fresh cloud).
--
-- Renaming a node changes its display name only: its path is the community's identity
-- in MQTT topics and batch headers, which gateways already use. A retired node takes no
-- new gateways, subscriptions or children; what it holds is kept.

ALTER TABLE communities
    ADD COLUMN display_name text CHECK (length(display_name) BETWEEN 1 AND 100),
    ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'retired')),
    ADD COLUMN retired_at timestamptz;

CREATE TABLE api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix        text NOT NULL UNIQUE CHECK (prefix ~ '^[a-z0-9]{8}$'),
    secret_hash   bytea NOT NULL CHECK (length(secret_hash) = 32),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    role          text NOT NULL CHECK (
        role IN ('admin', 'street', 'property_manager', 'dispatcher', 'installer')
    ),
    scope_id      bigint REFERENCES communities (id),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    bigint REFERENCES api_keys (id),
    expires_at    timestamptz,
    revoked_at    timestamptz,
    revoked_by    bigint REFERENCES api_keys (id),
    last_used_at  timestamptz,
    CONSTRAINT api_keys_whole_tree_is_admin CHECK (scope_id IS NOT NULL OR role = 'admin')
);
CREATE INDEX api_keys_scope ON api_keys (scope_id);
