-- 003_retries.sql: retry state, final outcomes and per-endpoint retry
-- schedules.
--
-- A failed attempt that will be retried writes its retry row here in the
-- same transaction as its attempt row; webhook-scheduler claims due rows
-- (FOR UPDATE SKIP LOCKED), produces them back to webhook.deliveries and
-- deletes them in the same transaction once Kafka acknowledged them.

CREATE TABLE IF NOT EXISTS webhooks.retries (
    delivery_id  text PRIMARY KEY,
    endpoint_id  text NOT NULL,
    app          text NOT NULL,
    event_id     text NOT NULL,
    attempt      integer NOT NULL CHECK (attempt >= 1),  -- the attempt to make
    due_at       timestamptz NOT NULL,
    delivery     bytea NOT NULL,     -- webhook.v1.Delivery, attempt set
    last_error   text,
    last_status  integer,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS retries_due_idx ON webhooks.retries (due_at);
CREATE INDEX IF NOT EXISTS retries_endpoint_idx ON webhooks.retries (endpoint_id);

-- When the retry of an attempt is due (NULL: none), and whether the
-- attempt ended its delivery for good (dead-lettered).
ALTER TABLE webhooks.attempts ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;
ALTER TABLE webhooks.attempts ADD COLUMN IF NOT EXISTS final boolean NOT NULL DEFAULT false;

-- Per-endpoint retry schedule in milliseconds (NULL: the default).
ALTER TABLE webhooks.endpoints ADD COLUMN IF NOT EXISTS retry_schedule_ms integer[];

-- New retries wake the scheduler when they are due soon.
CREATE OR REPLACE FUNCTION webhooks.notify_retry() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.due_at <= now() + interval '2 seconds' THEN
        PERFORM pg_notify('webhooks_retries', '');
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS retries_notify ON webhooks.retries;
CREATE TRIGGER retries_notify
    AFTER INSERT OR UPDATE OF due_at ON webhooks.retries
    FOR EACH ROW EXECUTE FUNCTION webhooks.notify_retry();

CREATE OR REPLACE VIEW webhooks.delivery_log AS
SELECT delivery_id, event_id, endpoint_id, app, event_type, attempt, outcome,
       status_code, latency_ms, error_class, error, response_snippet, worker,
       attempted_at, next_attempt_at, final
FROM webhooks.attempts;

-- Latest attempt of every delivery, with the delivery's state:
-- succeeded, retrying (a retry is scheduled), or failed (no more attempts).
DROP VIEW IF EXISTS webhooks.delivery_status;
CREATE VIEW webhooks.delivery_status AS
SELECT DISTINCT ON (delivery_id)
       delivery_id, event_id, endpoint_id, app, event_type,
       attempt AS attempts, outcome AS last_outcome, status_code, error,
       attempted_at AS last_attempt_at, next_attempt_at,
       CASE WHEN outcome = 'succeeded' THEN 'succeeded'
            WHEN next_attempt_at IS NOT NULL THEN 'retrying'
            ELSE 'failed' END AS state
FROM webhooks.attempts
ORDER BY delivery_id, attempted_at DESC, attempt DESC;
