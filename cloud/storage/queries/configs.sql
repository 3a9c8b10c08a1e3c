-- name: configs_claim_pushes
-- Up to %(limit)s active gateways whose wanted config version is neither running there
-- nor refused by them, and is due: never pushed, made since the last push, or pushed
-- and unanswered for longer than the retry wait. The wait doubles with the version's
-- age (the time from its making to its last push), between %(retry_s)s and
-- %(retry_cap_s)s seconds, so a gateway that stays offline is not sent a command a
-- minute for days (its broker session would queue them all); a gateway coming back
-- online says so in its status, which makes it due at once (configs_record_status).
-- Each claimed row's config_pushed_at becomes now() in this statement; SKIP LOCKED lets
-- other pushers (and the registry, which locks the row to make a version) pass by.
WITH due AS (
    SELECT g.id
    FROM gateways g
    JOIN gateway_configs gc ON gc.gateway_id = g.id AND gc.version = g.config_version
    WHERE g.status = 'active'
      AND g.config_version > g.config_applied
      AND g.config_version > g.config_refused
      AND (
          g.config_pushed_at IS NULL
          OR gc.created_at > g.config_pushed_at
          OR g.config_pushed_at <= now() - make_interval(secs => LEAST(
              %(retry_cap_s)s::double precision,
              GREATEST(
                  %(retry_s)s::double precision,
                  extract(epoch FROM g.config_pushed_at - gc.created_at)::double precision
              )
          ))
      )
    ORDER BY g.config_pushed_at NULLS FIRST, g.id
    LIMIT %(limit)s
    FOR UPDATE OF g SKIP LOCKED
)
UPDATE gateways g
SET config_pushed_at = now()
FROM due, communities c, gateway_configs gc
WHERE g.id = due.id
  AND c.id = g.community_id
  AND gc.gateway_id = g.id AND gc.version = g.config_version
RETURNING g.id AS gateway, c.path AS community, g.config_version AS version,
          gc.document::text AS document, g.config_pushed_at AS pushed_at

-- name: configs_record_applied
-- The gateway answered that it runs %(running)s. Results only move config_applied
-- forward (a late answer to an older push says less than the row already knows);
-- config_error goes once the refused version is behind the running one.
UPDATE gateways g
SET config_applied = %(running)s,
    config_applied_at = now(),
    config_error = CASE WHEN %(running)s >= g.config_refused THEN NULL ELSE g.config_error END
FROM communities c
WHERE g.id = %(gateway)s AND c.id = g.community_id AND c.path = %(community)s
  AND g.config_applied < %(running)s

-- name: configs_record_refused
-- The gateway judged version %(version)s invalid: it is not pushed again. Only the
-- version the cloud still wants is recorded; a refusal of one the registry has since
-- replaced says nothing about what is wanted now.
UPDATE gateways g
SET config_refused = %(version)s, config_error = %(detail)s
FROM communities c
WHERE g.id = %(gateway)s AND c.id = g.community_id AND c.path = %(community)s
  AND g.config_version = %(version)s
  AND g.config_applied < %(version)s
  AND g.config_refused < %(version)s

-- name: configs_record_status
-- An online status saying the gateway runs %(running)s. The status is the gateway's
-- own word, so it may move config_applied back (a replaced box, or one whose stored
-- config no longer validates, runs 0). A gateway behind the wanted version, and not
-- refusing it, is made due at once: it has just connected, or just applied something.
UPDATE gateways g
SET config_applied = %(running)s,
    config_applied_at = CASE
        WHEN g.config_applied <> %(running)s THEN now() ELSE g.config_applied_at END,
    config_error = CASE
        WHEN %(running)s >= g.config_refused THEN NULL ELSE g.config_error END,
    config_pushed_at = CASE
        WHEN %(running)s < g.config_version AND g.config_version > g.config_refused THEN NULL
        ELSE g.config_pushed_at END
FROM communities c
WHERE g.id = %(gateway)s AND c.id = g.community_id AND c.path = %(community)s
  AND g.status = 'active'
  AND (
      g.config_applied <> %(running)s
      OR (%(running)s < g.config_version AND g.config_version > g.config_refused)
  )
