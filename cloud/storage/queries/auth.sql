-- name: api_key_insert
INSERT INTO api_keys (prefix, secret_hash, name, role, scope_id, created_by, expires_at)
VALUES (%(prefix)s, %(secret_hash)s, %(name)s, %(role)s, %(scope_id)s, %(created_by)s,
        %(expires_at)s)
RETURNING id

-- name: api_key_for_token
-- The key with this prefix, its scope's path, and every node of its subtree (NULL for
-- a whole-tree key), in one round trip per request.
SELECT k.id, k.secret_hash, k.name, k.role, k.scope_id, c.path AS scope_path,
       k.revoked_at IS NOT NULL AS revoked,
       coalesce(k.expires_at <= now(), false) AS expired,
       k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute' AS stale,
       CASE WHEN k.scope_id IS NULL THEN NULL ELSE (
           WITH RECURSIVE subtree (id) AS (
               SELECT k.scope_id
               UNION ALL
               SELECT n.id FROM communities n JOIN subtree s ON n.parent_id = s.id
           )
           SELECT array_agg(id) FROM subtree
       ) END AS communities
FROM api_keys k
LEFT JOIN communities c ON c.id = k.scope_id
WHERE k.prefix = %(prefix)s

-- name: api_key_touch
-- last_used_at is kept to the minute: one write a minute per busy key, not per request.
UPDATE api_keys SET last_used_at = now() WHERE id = %(id)s

-- name: api_key_get
SELECT k.id, k.prefix, k.name, k.role, k.scope_id, c.path AS scope_path, k.created_at,
       k.created_by, k.expires_at, k.revoked_at, k.last_used_at
FROM api_keys k
LEFT JOIN communities c ON c.id = k.scope_id
WHERE k.id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR k.scope_id = ANY(%(scope)s::bigint[]))
  AND k.role = ANY(%(roles)s::text[])

-- name: api_key_list
-- Keys in a subtree, newest first; a key-set page after %(before)s.
SELECT k.id, k.prefix, k.name, k.role, k.scope_id, c.path AS scope_path, k.created_at,
       k.created_by, k.expires_at, k.revoked_at, k.last_used_at
FROM api_keys k
LEFT JOIN communities c ON c.id = k.scope_id
WHERE (%(scope)s::bigint[] IS NULL OR k.scope_id = ANY(%(scope)s::bigint[]))
  AND k.role = ANY(%(roles)s::text[])
  AND (%(before)s::bigint IS NULL OR k.id < %(before)s::bigint)
  AND (%(active)s::boolean IS NULL
       OR %(active)s = (k.revoked_at IS NULL AND coalesce(k.expires_at > now(), true)))
ORDER BY k.id DESC
LIMIT %(limit)s

-- name: api_key_revoke
-- Revoking a revoked key keeps the first revocation.
UPDATE api_keys
SET revoked_at = coalesce(revoked_at, now()), revoked_by = coalesce(revoked_by, %(by)s)
WHERE id = %(id)s
RETURNING id

-- name: api_key_admins_usable
-- How many admin keys could be used now (migrate tells a fresh cloud how to make one).
SELECT count(*) FROM api_keys
WHERE role = 'admin' AND revoked_at IS NULL AND coalesce(expires_at > now(), true)
