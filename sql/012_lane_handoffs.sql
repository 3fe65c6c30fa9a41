-- 012_lane_handoffs.sql: hand-offs in a table of their own.
--
-- A worker that lets a partition go records where it handed it over
-- (sql/010_handoff.sql). That row was webhooks.lane_owners.handed_to,
-- updated in the recorder's transaction, which first locks every
-- lane_owners row FOR SHARE (the fence that keeps a take from changing an
-- epoch under its writes). Two workers handing partitions over at once
-- then each waited for the other's share lock: a deadlock Postgres broke
-- after deadlock_timeout by failing one of the writes. The hand-off now
-- goes to this table, which nothing locks that way. A row belongs to the
-- owner at `epoch`; the next take reads it while that epoch is current,
-- and bumping the epoch makes it stale.

CREATE TABLE webhooks.lane_handoffs (
    topic      text NOT NULL,
    partition  integer NOT NULL,
    epoch      bigint NOT NULL,   -- of the owner that handed it over
    handed_to  bigint NOT NULL,   -- every message below it was consumed
    handed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

INSERT INTO webhooks.lane_handoffs (topic, partition, epoch, handed_to)
SELECT topic, partition, epoch, handed_to FROM webhooks.lane_owners
WHERE handed_to IS NOT NULL;

ALTER TABLE webhooks.lane_owners DROP COLUMN handed_to;
