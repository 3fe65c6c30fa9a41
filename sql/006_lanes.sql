-- 006_lanes.sql: ordered delivery lanes (see docs/guarantees.md).
--
-- An ordered endpoint's lane is open while it has no row in webhooks.lanes.
-- When the delivery at its head fails, the worker owning the endpoint's
-- webhook.deliveries partition blocks the lane (head_delivery_id is the
-- delivery whose retry it waits for) and parks every later delivery in
-- webhooks.parked, in partition order. When the head succeeds or is
-- dead-lettered, head_delivery_id becomes NULL (draining): the owner
-- sends the parked deliveries in order, and deletes the lane row once
-- none is left. A lane whose in-memory backlog passes its bound spills the
-- same way (a row with a NULL head).
--
-- Writes are fenced by webhooks.lane_owners: a worker takes a partition by
-- bumping its epoch, and a worker's lane writes apply only while the epoch
-- they carry is still the partition's, so a worker that lost a partition
-- cannot change lanes behind its new owner.

CREATE TABLE IF NOT EXISTS webhooks.lane_owners (
    topic        text NOT NULL,
    partition    integer NOT NULL,
    epoch        bigint NOT NULL,
    worker       text NOT NULL,
    assigned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

CREATE TABLE IF NOT EXISTS webhooks.lanes (
    endpoint_id       text PRIMARY KEY,
    partition         integer NOT NULL,  -- of webhook.deliveries
    head_delivery_id  text,              -- NULL: draining parked deliveries
    head_attempt      integer,           -- the retry attempt it waits for
    blocked_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS lanes_partition_idx ON webhooks.lanes (partition);

CREATE TABLE IF NOT EXISTS webhooks.parked (
    endpoint_id  text NOT NULL,
    position     bigint NOT NULL,  -- webhook.deliveries offset: lane order
    delivery_id  text NOT NULL,
    delivery     bytea NOT NULL,   -- webhook.v1.Delivery
    parked_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (endpoint_id, delivery_id)
);
CREATE INDEX IF NOT EXISTS parked_order_idx
    ON webhooks.parked (endpoint_id, position);

-- One row per lane that is not open, for operators.
CREATE OR REPLACE VIEW webhooks.lane_status AS
SELECT l.endpoint_id, l.partition,
       CASE WHEN l.head_delivery_id IS NULL THEN 'draining'
            ELSE 'blocked' END AS state,
       l.head_delivery_id, l.head_attempt, r.due_at AS head_retry_due_at,
       (SELECT count(*) FROM webhooks.parked p
         WHERE p.endpoint_id = l.endpoint_id) AS parked,
       l.blocked_at, l.updated_at
FROM webhooks.lanes l
LEFT JOIN webhooks.retries r ON r.delivery_id = l.head_delivery_id;
