-- The community tree (city => street => community, the plan's three tiers), the
-- gateways of each community and the devices behind each gateway.
--
-- Paths: a city's path is its name ('ningguo'); a street's is its name ('xijin'); a
-- community's is 'street/community' ('xijin/fenghuang'), exactly as it appears in MQTT
-- topics and batch headers, which is why community paths are unique across the table.

CREATE TABLE communities (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    parent_id   bigint REFERENCES communities (id),
    tier        text NOT NULL CHECK (tier IN ('city', 'street', 'community')),
    name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9-]{0,31}$'),
    path        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT communities_city_is_root CHECK ((tier = 'city') = (parent_id IS NULL)),
    CONSTRAINT communities_tier_path_key UNIQUE (tier, path)
);
CREATE INDEX communities_parent ON communities (parent_id);

CREATE TABLE gateways (
    id            text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    community_id  bigint NOT NULL REFERENCES communities (id),
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    last_seen     timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX gateways_community ON gateways (community_id);

-- status is the installer's lifecycle (active, disabled); liveness is last_seen.
CREATE TABLE devices (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
    gateway_id  text NOT NULL REFERENCES gateways (id),
    kind        text NOT NULL,
    profile_id  text NOT NULL,
    building    text,
    unit        text,
    status      text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled')),
    last_seen   timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_gateway ON devices (gateway_id);
