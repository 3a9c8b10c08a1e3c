-- name: enqueue_incident_webhooks
-- One delivery per active subscription of the incident's community or any ancestor of
-- it whose filters let the event through, written in the caller's transaction. The
-- payload follows the Standard Webhooks shape (type, timestamp, data) and carries the
-- incident's reference and location only: never names or health data.
WITH RECURSIVE place AS (
    SELECT c.id, c.parent_id FROM communities c
    JOIN incidents i ON i.community_id = c.id
    WHERE i.id = %(incident_id)s
    UNION ALL
    SELECT c.id, c.parent_id FROM communities c JOIN place p ON c.id = p.parent_id
),
incident AS (
    SELECT i.id, i.type, i.priority, i.status, i.building, i.unit, c.path AS community
    FROM incidents i JOIN communities c ON c.id = i.community_id
    WHERE i.id = %(incident_id)s
)
INSERT INTO webhook_deliveries (message_id, subscription_id, incident_id, event_type, payload)
SELECT
    'msg_' || replace(gen_random_uuid()::text, '-', ''),
    s.id,
    incident.id,
    %(event_type)s::text,
    jsonb_build_object(
        'type', %(event_type)s::text,
        'timestamp', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'data', jsonb_build_object(
            'incident_id', incident.id,
            'incident_type', incident.type,
            'priority', incident.priority,
            'status', incident.status,
            'location', jsonb_build_object(
                'community', incident.community,
                'building', incident.building,
                'unit', incident.unit
            )
        )
    )
FROM webhook_subscriptions s, incident
WHERE s.status = 'active'
  AND s.community_id IN (SELECT id FROM place)
  AND (cardinality(s.event_types) = 0 OR %(event_type)s::text = ANY (s.event_types))
  AND (cardinality(s.incident_types) = 0 OR incident.type = ANY (s.incident_types))
  AND incident.priority <= s.max_priority

-- name: claim_webhook_deliveries
-- Take up to %(limit)s due deliveries for one worker: each gets a fresh claim token, its
-- attempt counted and a lease (next_attempt_at pushed %(lease_s)s seconds ahead) in this
-- one short statement, so no other worker sees it as due while it is being sent.
-- SKIP LOCKED lets workers claiming at the same moment take different rows instead of
-- waiting on each other. Returns each row's body as stored (the bytes that are signed)
-- and its subscription's URL, secrets and status.
WITH due AS (
    SELECT d.id FROM webhook_deliveries d
    WHERE d.status = 'pending' AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at, d.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE webhook_deliveries d
SET attempts = d.attempts + 1,
    claim_token = gen_random_uuid(),
    last_attempt_at = now(),
    next_attempt_at = now() + make_interval(secs => %(lease_s)s)
FROM due, webhook_subscriptions s
WHERE d.id = due.id AND s.id = d.subscription_id
RETURNING d.id, d.message_id, d.subscription_id, d.attempts, d.claim_token,
          d.payload::text AS body, s.url, s.secrets, s.status AS subscription_status

-- name: record_webhook_delivered
-- The receiver answered 2xx. Only the claim holding %(claim_token)s may record.
UPDATE webhook_deliveries
SET status = 'delivered', delivered_at = now(), last_status_code = %(status_code)s,
    last_error = NULL, claim_token = NULL
WHERE id = %(id)s AND claim_token = %(claim_token)s AND status = 'pending'

-- name: record_webhook_retry
-- The attempt failed and another is due after %(delay_s)s seconds.
UPDATE webhook_deliveries
SET last_status_code = %(status_code)s, last_error = %(error)s, claim_token = NULL,
    next_attempt_at = now() + make_interval(secs => %(delay_s)s)
WHERE id = %(id)s AND claim_token = %(claim_token)s AND status = 'pending'

-- name: record_webhook_dead
-- The last attempt failed (or the endpoint is gone): a dead letter until replayed.
UPDATE webhook_deliveries
SET status = 'dead', last_status_code = %(status_code)s, last_error = %(error)s,
    claim_token = NULL
WHERE id = %(id)s AND claim_token = %(claim_token)s AND status = 'pending'

-- name: disable_webhook_subscription
-- Stop sending to a subscription, and dead-letter its pending deliveries (a claim in
-- flight loses its token, so its outcome is not recorded). Returns no row when there
-- is no such subscription in %(scope)s (NULL: anywhere, as delivery workers ask).
WITH sub AS (
    UPDATE webhook_subscriptions
    SET status = 'disabled', disabled_reason = %(reason)s, updated_at = now()
    WHERE id = %(id)s
      AND (%(scope)s::bigint[] IS NULL OR community_id = ANY(%(scope)s::bigint[]))
    RETURNING id
), dead AS (
    UPDATE webhook_deliveries d
    SET status = 'dead', claim_token = NULL,
        last_error = 'subscription disabled: ' || %(reason)s::text
    FROM sub
    WHERE d.subscription_id = sub.id AND d.status = 'pending'
    RETURNING d.id
)
SELECT sub.id, (SELECT count(*) FROM dead) AS dead_lettered FROM sub

-- name: enable_webhook_subscription
UPDATE webhook_subscriptions
SET status = 'active', disabled_reason = NULL, updated_at = now()
WHERE id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR community_id = ANY(%(scope)s::bigint[]))
RETURNING id

-- name: webhook_subscription_node
-- The node a new subscription would belong to, if it is in %(scope)s; locked until the
-- insert commits, so it cannot be retired in between.
SELECT path, status FROM communities
WHERE id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR id = ANY(%(scope)s::bigint[]))
FOR SHARE

-- name: insert_webhook_subscription
INSERT INTO webhook_subscriptions
    (community_id, url, description, event_types, incident_types, max_priority, secrets)
VALUES (%(community_id)s, %(url)s, %(description)s, %(event_types)s, %(incident_types)s,
        %(max_priority)s, ARRAY[%(secret)s::text])
RETURNING id

-- name: list_webhook_subscriptions
-- Subscriptions in %(scope)s with their node's path and tier, oldest first; never their
-- secrets, only how many. One by %(id)s, or a page of those after %(after)s.
SELECT s.id, c.path AS community, c.tier, s.url, s.description, s.event_types,
       s.incident_types, s.max_priority, s.status, s.disabled_reason,
       cardinality(s.secrets) AS secret_count, s.created_at, s.updated_at
FROM webhook_subscriptions s JOIN communities c ON c.id = s.community_id
WHERE (%(scope)s::bigint[] IS NULL OR s.community_id = ANY(%(scope)s::bigint[]))
  AND (%(id)s::bigint IS NULL OR s.id = %(id)s::bigint)
  AND (%(status)s::text IS NULL OR s.status = %(status)s::text)
  AND (%(after)s::bigint IS NULL OR s.id > %(after)s::bigint)
ORDER BY s.id
LIMIT %(limit)s

-- name: webhook_subscription_secrets
SELECT secrets FROM webhook_subscriptions
WHERE id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR community_id = ANY(%(scope)s::bigint[]))
FOR UPDATE

-- name: set_webhook_subscription_secrets
UPDATE webhook_subscriptions SET secrets = %(secrets)s, updated_at = now()
WHERE id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR community_id = ANY(%(scope)s::bigint[]))

-- name: list_webhook_deliveries
-- Deliveries of subscriptions in %(scope)s, newest first, optionally of one status and
-- one subscription; a page goes on below %(before)s.
SELECT d.id, d.message_id, d.subscription_id, d.incident_id, d.event_type, d.status,
       d.attempts, d.next_attempt_at, d.last_attempt_at, d.last_status_code, d.last_error,
       d.created_at, d.delivered_at
FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
WHERE (%(scope)s::bigint[] IS NULL OR s.community_id = ANY(%(scope)s::bigint[]))
  AND (%(status)s::text IS NULL OR d.status = %(status)s::text)
  AND (%(subscription_id)s::bigint IS NULL OR d.subscription_id = %(subscription_id)s::bigint)
  AND (%(before)s::bigint IS NULL OR d.id < %(before)s::bigint)
ORDER BY d.id DESC
LIMIT %(limit)s

-- name: webhook_delivery_for_replay
SELECT d.status, s.status AS subscription_status
FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
WHERE d.id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR s.community_id = ANY(%(scope)s::bigint[]))
FOR UPDATE OF d

-- name: replay_webhook_delivery
-- Due again now, with a fresh set of attempts and the same message_id (webhook-id),
-- so a receiver that did get an earlier attempt recognises the repeat.
UPDATE webhook_deliveries d
SET status = 'pending', attempts = 0, next_attempt_at = now(), claim_token = NULL,
    delivered_at = NULL
FROM webhook_subscriptions s
WHERE d.id = %(id)s AND s.id = d.subscription_id
  AND (%(scope)s::bigint[] IS NULL OR s.community_id = ANY(%(scope)s::bigint[]))

-- name: replay_webhook_subscription_dead
-- Every dead letter of one subscription due again now (created at or after %(since)s
-- when given), each keeping its message_id. Returns the rows replayed.
UPDATE webhook_deliveries d
SET status = 'pending', attempts = 0, next_attempt_at = now(), claim_token = NULL
FROM webhook_subscriptions s
WHERE d.subscription_id = %(subscription_id)s AND s.id = d.subscription_id
  AND (%(scope)s::bigint[] IS NULL OR s.community_id = ANY(%(scope)s::bigint[]))
  AND d.status = 'dead'
  AND (%(since)s::timestamptz IS NULL OR d.created_at >= %(since)s::timestamptz)
RETURNING d.id

-- name: webhook_subscription_status
SELECT status FROM webhook_subscriptions
WHERE id = %(id)s
  AND (%(scope)s::bigint[] IS NULL OR community_id = ANY(%(scope)s::bigint[]))
