-- 011_lane_partition.sql: a lane is one endpoint's on one partition.
--
-- An endpoint's messages arrive on the webhook.deliveries partition its
-- id maps to, but after the topic's partition count changed
-- (docs/guarantees.md) an endpoint has messages on two partitions, each
-- consumed in its own order and possibly by different workers. Lanes and
-- their parked deliveries were keyed by endpoint alone, so the owner of
-- one partition could load, drain or reopen a lane holding the other
-- partition's deliveries. They are now keyed by (partition, endpoint):
-- each partition's owner handles its own lanes only.

ALTER TABLE webhooks.parked ADD COLUMN partition integer;
UPDATE webhooks.parked p SET partition = l.partition
FROM webhooks.lanes l WHERE l.endpoint_id = p.endpoint_id;
-- a parked row always has its lane's row (both are written in one
-- transaction); one without would belong to no partition's owner: -1
-- keeps it for an operator to look at
UPDATE webhooks.parked SET partition = -1 WHERE partition IS NULL;
ALTER TABLE webhooks.parked ALTER COLUMN partition SET NOT NULL;
ALTER TABLE webhooks.parked DROP CONSTRAINT parked_pkey;
ALTER TABLE webhooks.parked ADD PRIMARY KEY (partition, endpoint_id, delivery_id);
DROP INDEX webhooks.parked_order_idx;
CREATE INDEX parked_order_idx
    ON webhooks.parked (partition, endpoint_id, position);

ALTER TABLE webhooks.lanes DROP CONSTRAINT lanes_pkey;
ALTER TABLE webhooks.lanes ADD PRIMARY KEY (partition, endpoint_id);
DROP INDEX webhooks.lanes_partition_idx; -- the key leads with partition

-- One row per lane that is not open, for operators.
CREATE OR REPLACE VIEW webhooks.lane_status AS
SELECT l.endpoint_id, l.partition,
       CASE WHEN l.head_delivery_id IS NULL THEN 'draining'
            ELSE 'blocked' END AS state,
       l.head_delivery_id, l.head_attempt, r.due_at AS head_retry_due_at,
       (SELECT count(*) FROM webhooks.parked p
         WHERE p.partition = l.partition
           AND p.endpoint_id = l.endpoint_id) AS parked,
       l.blocked_at, l.updated_at
FROM webhooks.lanes l
LEFT JOIN webhooks.retries r ON r.delivery_id = l.head_delivery_id;
