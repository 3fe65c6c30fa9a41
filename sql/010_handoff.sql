-- 010_handoff.sql: what a partition's previous owner already delivered.
--
-- When a worker lets a webhook.deliveries partition go (a revoke: a
-- rebalance, or its own stop), it records in handed_to the offset below
-- which it consumed every message, in the same fenced transaction as its
-- last lane changes, once every outcome it finished is durable. The group
-- may still refuse its last offset commit (a replacement joining while it
-- drains makes the group rebalance), so the next owner can consume those
-- messages again: it checks each one below handed_to against
-- webhooks.attempts before sending it, and skips what already ended. A
-- worker that crashes writes nothing (the next owner then sends again what
-- was delivered since the last commit). Taking the partition resets it.

ALTER TABLE webhooks.lane_owners ADD COLUMN IF NOT EXISTS handed_to bigint;
