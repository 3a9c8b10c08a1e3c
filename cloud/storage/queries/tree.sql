-- name: tree_nodes_by_path
-- Nodes with this path; a city and a street may share one, told apart by tier.
SELECT id, parent_id, tier, name, path, display_name, status, created_at, retired_at
FROM communities
WHERE path = %(path)s AND (%(tier)s::text IS NULL OR tier = %(tier)s::text)
ORDER BY id

-- name: tree_subtree
-- Every node under %(root)s, itself included.
WITH RECURSIVE subtree (id) AS (
    SELECT %(root)s::bigint
    UNION ALL
    SELECT n.id FROM communities n JOIN subtree s ON n.parent_id = s.id
)
SELECT array_agg(id) FROM subtree

-- name: tree_list
-- Nodes in a scope by id; a page starts after the id %(after)s.
SELECT id, parent_id, tier, name, path, display_name, status, created_at, retired_at
FROM communities
WHERE (%(scope)s::bigint[] IS NULL OR id = ANY(%(scope)s::bigint[]))
  AND (%(tier)s::text IS NULL OR tier = %(tier)s::text)
  AND (%(status)s::text IS NULL OR status = %(status)s::text)
  AND (%(after)s::bigint IS NULL OR id > %(after)s::bigint)
ORDER BY id
LIMIT %(limit)s

-- name: tree_node_get
-- One node, if it lies within the scope.
SELECT id, parent_id, tier, name, path, display_name, status, created_at, retired_at
FROM communities
WHERE id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR id = ANY(%(scope)s::bigint[]))

-- name: tree_node_share
-- A parent about to take a child: the share lock makes a concurrent retirement (which
-- locks the node FOR UPDATE) wait for the child, or the child see the node retired.
SELECT id, parent_id, tier, name, path, display_name, status, created_at, retired_at
FROM communities
WHERE id = %(id)s
FOR SHARE

-- name: tree_node_lock
-- A node about to be retired, if it lies within the scope; no child or gateway can be
-- added under it until the transaction ends.
SELECT id, parent_id, tier, name, path, display_name, status, created_at, retired_at
FROM communities
WHERE id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR id = ANY(%(scope)s::bigint[]))
FOR UPDATE

-- name: tree_insert
-- No row when a node of this tier already has the path.
INSERT INTO communities (parent_id, tier, name, path, display_name)
VALUES (%(parent_id)s, %(tier)s, %(name)s, %(path)s, %(display_name)s)
ON CONFLICT (tier, path) DO NOTHING
RETURNING id, parent_id, tier, name, path, display_name, status, created_at, retired_at

-- name: tree_rename
-- The display name only: the path is the node's identity in MQTT topics.
UPDATE communities
SET display_name = %(display_name)s
WHERE id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR id = ANY(%(scope)s::bigint[]))
RETURNING id, parent_id, tier, name, path, display_name, status, created_at, retired_at

-- name: tree_in_use
-- What still lives under a node: active nodes below it, active gateways in its subtree.
WITH RECURSIVE subtree (id) AS (
    SELECT %(id)s::bigint
    UNION ALL
    SELECT n.id FROM communities n JOIN subtree s ON n.parent_id = s.id
)
SELECT
    (SELECT count(*) FROM communities c JOIN subtree s ON s.id = c.id
     WHERE c.id <> %(id)s::bigint AND c.status = 'active') AS nodes,
    (SELECT count(*) FROM gateways g JOIN subtree s ON s.id = g.community_id
     WHERE g.status = 'active') AS gateways

-- name: tree_retire
UPDATE communities
SET status = 'retired', retired_at = now()
WHERE id = %(id)s
RETURNING id, parent_id, tier, name, path, display_name, status, created_at, retired_at
