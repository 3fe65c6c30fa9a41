-- 008_unsent_dead_letters.sql: dead letters the worker gave up producing.
--
-- A dead letter the dead-letter topic does not take within
-- WORKER_DEAD_LETTER_GIVE_UP (the topic is missing, has no leader, or the
-- broker keeps refusing it) is written here instead, before the offset of
-- the message it belongs to moves on, so giving it up loses nothing: the
-- row holds the webhook.v1.DeadLetter exactly as it would have been
-- produced, with what it is about in columns. Undecodable events and
-- delivery messages have no other record. Written by worker/deadletter.c
-- only; rows stay until an operator handles them (docs/operations.md,
-- "Dead letters that cannot be sent") and deletes them. At least once:
-- a worker that stops between the insert and committing the offset leaves
-- the message to the next owner, which may insert it again.

CREATE TABLE IF NOT EXISTS webhooks.unsent_dead_letters (
    id               bigserial PRIMARY KEY,
    dead_topic       text NOT NULL,     -- where it was to be produced
    kafka_key        text,              -- its key there (the endpoint id)
    reason           integer NOT NULL,  -- webhook.v1.DeadLetter.Reason
    detail           text NOT NULL,
    delivery_id      text,              -- NULL for undecodable messages
    event_id         text,
    endpoint_id      text,
    app              text,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    retries          integer NOT NULL,  -- sends repeated before giving up
    first_tried_at   timestamptz NOT NULL,
    given_up_at      timestamptz NOT NULL DEFAULT now(),
    last_error       text NOT NULL,     -- why Kafka did not take it
    without_bodies   boolean NOT NULL,  -- dead_letter is the bodiless form
    dead_letter      bytea NOT NULL     -- webhook.v1.DeadLetter
);

CREATE INDEX IF NOT EXISTS unsent_dead_letters_source_idx
    ON webhooks.unsent_dead_letters (source_topic, source_partition,
                                     source_offset);
