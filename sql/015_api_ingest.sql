-- 015_api_ingest.sql: event ids webhook-api has published, for its
-- duplicate check (POST /v1/events).
--
-- A request claims each new (app, id) as 'pending' before it produces the
-- event, marks it 'published' once Kafka acknowledged it, and deletes the
-- claim when it could not be produced (so the client's retry publishes
-- it). An id 'published' within the window (24 h) is answered
-- "duplicate"; a 'pending' claim older than claim_expires_at (a server
-- that died mid-request) may be claimed again. Old rows are deleted by
-- webhooks.api_ingest_prune(), which webhook-api runs periodically.

CREATE TABLE IF NOT EXISTS webhooks.api_ingested (
    app              text NOT NULL,
    id               text NOT NULL,
    state            text NOT NULL CHECK (state IN ('pending', 'published')),
    claimed_at       timestamptz NOT NULL DEFAULT now(),
    claim_expires_at timestamptz NOT NULL,
    published_at     timestamptz,
    PRIMARY KEY (app, id)
);
CREATE INDEX IF NOT EXISTS api_ingested_claimed_idx
    ON webhooks.api_ingested (claimed_at);

CREATE OR REPLACE FUNCTION webhooks.api_ingest_prune(window_s integer)
RETURNS bigint LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM webhooks.api_ingested
        WHERE claimed_at < now() - make_interval(secs => window_s)
          AND (state = 'published' OR claim_expires_at < now())
        RETURNING 1)
    SELECT count(*) FROM gone
$$;
