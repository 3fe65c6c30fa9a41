-- 009_retry_partition.sql: the webhook.deliveries partition a retry goes
-- back to.
--
-- An ordered lane belongs to the deliveries partition its endpoint's
-- messages arrive on (webhooks.lanes.partition), and a blocked lane waits
-- for its head's retry on that partition only. webhook-scheduler used to
-- produce a retry by key, through whatever partitioner its own producer
-- was configured with (KAFKA_EXTRA may set another), so the retry could
-- land on another partition and its lane stayed blocked. The worker now
-- writes the lane's partition with every retry row, and the scheduler
-- produces the retry to it. Rows written before this migration have
-- none: the scheduler sends those to the partition their endpoint id maps
-- to (CRC32 of the key modulo the partition count, the fan-out's mapping),
-- and so does a row whose partition the topic does not have.

ALTER TABLE webhooks.retries ADD COLUMN IF NOT EXISTS partition integer;
