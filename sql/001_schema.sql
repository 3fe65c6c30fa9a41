-- 001_schema.sql: the webhooks schema, endpoints and the attempt history.
--
-- Applied by `webhookctl migrate` (and the dev stack). Every statement is
-- idempotent so a half-applied migration can simply be run again.

CREATE SCHEMA IF NOT EXISTS webhooks;

-- Endpoints customers registered. Secrets are stored sealed with
-- AES-256-GCM (key: WEBHOOK_SECRET_KEY), authenticated with the endpoint id.
CREATE TABLE IF NOT EXISTS webhooks.endpoints (
    id               text PRIMARY KEY CHECK (id ~ '^ep_[a-z0-9]{8,40}$'),
    app              text NOT NULL CHECK (length(app) BETWEEN 1 AND 128),
    url              text NOT NULL CHECK (length(url) BETWEEN 8 AND 2048),
    description      text NOT NULL DEFAULT '',
    secrets_sealed   bytea NOT NULL,
    event_types      text NOT NULL DEFAULT '*',
    ordered          boolean NOT NULL DEFAULT true,
    max_in_flight    integer NOT NULL DEFAULT 1
                     CHECK (max_in_flight BETWEEN 1 AND 1000),
    rate_limit_per_s integer CHECK (rate_limit_per_s > 0),
    timeout_ms       integer CHECK (timeout_ms BETWEEN 100 AND 120000),
    disabled         boolean NOT NULL DEFAULT false,
    disabled_reason  text,
    disabled_at      timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS endpoints_app_idx ON webhooks.endpoints (app);

-- Workers cache endpoints and refresh one when it changes.
CREATE OR REPLACE FUNCTION webhooks.notify_endpoint_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('webhooks_endpoints', OLD.id);
    ELSE
        PERFORM pg_notify('webhooks_endpoints', NEW.id);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS endpoints_notify ON webhooks.endpoints;
CREATE TRIGGER endpoints_notify
    AFTER INSERT OR UPDATE OR DELETE ON webhooks.endpoints
    FOR EACH ROW EXECUTE FUNCTION webhooks.notify_endpoint_change();

-- One row per delivery attempt, partitioned by day (UTC). Rows outside the
-- created partitions land in attempts_default, so recording never fails.
CREATE TABLE IF NOT EXISTS webhooks.attempts (
    delivery_id      text NOT NULL,
    event_id         text NOT NULL,
    endpoint_id      text NOT NULL,
    app              text NOT NULL,
    event_type       text NOT NULL,
    attempt          integer NOT NULL CHECK (attempt >= 1),
    outcome          text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    status_code      integer,
    latency_ms       integer NOT NULL,
    error_class      text,
    error            text,
    response_snippet text,
    worker           text NOT NULL,
    attempted_at     timestamptz NOT NULL
) PARTITION BY RANGE (attempted_at);

CREATE TABLE IF NOT EXISTS webhooks.attempts_default
    PARTITION OF webhooks.attempts DEFAULT;
CREATE INDEX IF NOT EXISTS attempts_delivery_idx
    ON webhooks.attempts (delivery_id);
CREATE INDEX IF NOT EXISTS attempts_event_idx
    ON webhooks.attempts (event_id);
CREATE INDEX IF NOT EXISTS attempts_endpoint_time_idx
    ON webhooks.attempts (endpoint_id, attempted_at);

-- Creates the daily partitions from today through days_ahead days ahead.
-- A day that already has rows in attempts_default is skipped (those rows
-- stay queryable there).
CREATE OR REPLACE FUNCTION webhooks.ensure_partitions(days_ahead integer DEFAULT 7)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date;
    created integer := 0;
    name text;
BEGIN
    FOR i IN 0..days_ahead LOOP
        d := (now() AT TIME ZONE 'UTC')::date + i;
        name := 'attempts_' || to_char(d, 'YYYYMMDD');
        IF to_regclass('webhooks.' || name) IS NULL THEN
            BEGIN
                EXECUTE format(
                    'CREATE TABLE webhooks.%I PARTITION OF webhooks.attempts '
                    'FOR VALUES FROM (%L) TO (%L)', name,
                    (d::timestamp AT TIME ZONE 'UTC'),
                    ((d + 1)::timestamp AT TIME ZONE 'UTC'));
                created := created + 1;
            EXCEPTION WHEN check_violation THEN
                RAISE NOTICE 'partition % skipped: attempts_default holds rows for it', name;
            END;
        END IF;
    END LOOP;
    RETURN created;
END $$;

-- Drops daily partitions wholly older than the retention period.
CREATE OR REPLACE FUNCTION webhooks.drop_old_partitions(retention interval DEFAULT '30 days')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
    cutoff date := ((now() - retention) AT TIME ZONE 'UTC')::date;
BEGIN
    FOR r IN
        SELECT c.relname FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE n.nspname = 'webhooks' AND p.relname = 'attempts'
          AND c.relname ~ '^attempts_[0-9]{8}$'
    LOOP
        IF to_date(substr(r.relname, 10), 'YYYYMMDD') < cutoff THEN
            EXECUTE format('DROP TABLE webhooks.%I', r.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END $$;

SELECT webhooks.ensure_partitions(7);

-- The documented history interface: one row per attempt.
CREATE OR REPLACE VIEW webhooks.delivery_log AS
SELECT delivery_id, event_id, endpoint_id, app, event_type, attempt, outcome,
       status_code, latency_ms, error_class, error, response_snippet, worker,
       attempted_at
FROM webhooks.attempts;

-- Latest attempt of every delivery.
CREATE OR REPLACE VIEW webhooks.delivery_status AS
SELECT DISTINCT ON (delivery_id)
       delivery_id, event_id, endpoint_id, app, event_type,
       attempt AS attempts, outcome AS last_outcome, status_code, error,
       attempted_at AS last_attempt_at
FROM webhooks.attempts
ORDER BY delivery_id, attempted_at DESC, attempt DESC;

-- Failed attempts of the last hour, per endpoint.
CREATE OR REPLACE VIEW webhooks.endpoint_failures_last_hour AS
SELECT endpoint_id, count(*) AS failures,
       max(attempted_at) AS last_failure_at,
       (array_agg(error ORDER BY attempted_at DESC))[1] AS last_error
FROM webhooks.attempts
WHERE outcome = 'failed' AND attempted_at > now() - interval '1 hour'
GROUP BY endpoint_id;
