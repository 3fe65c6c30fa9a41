-- 004_events.sql: the events themselves, kept for replay.
--
-- The fan-out stage writes every decoded event here (as its protobuf
-- webhook.v1.Event) before its Kafka offset moves, so `webhookctl replay`
-- can re-send any delivery still within retention. A redelivered event may
-- be stored twice; readers take the newest row of (app, event_id).
-- Partitioned by day like webhooks.attempts; webhooks.maintain() creates
-- and expires the partitions of both tables.

CREATE TABLE IF NOT EXISTS webhooks.events (
    app          text NOT NULL,
    event_id     text NOT NULL,
    event_type   text NOT NULL,
    event        bytea NOT NULL,   -- webhook.v1.Event
    received_at  timestamptz NOT NULL
) PARTITION BY RANGE (received_at);

CREATE TABLE IF NOT EXISTS webhooks.events_default
    PARTITION OF webhooks.events DEFAULT;
CREATE INDEX IF NOT EXISTS events_app_id_idx
    ON webhooks.events (app, event_id, received_at);

-- Daily partitions for both history tables.
CREATE OR REPLACE FUNCTION webhooks.ensure_partitions(days_ahead integer DEFAULT 7)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    d date;
    created integer := 0;
    name text;
    parent text;
BEGIN
    FOREACH parent IN ARRAY ARRAY['attempts', 'events'] LOOP
        FOR i IN 0..days_ahead LOOP
            d := (now() AT TIME ZONE 'UTC')::date + i;
            name := parent || '_' || to_char(d, 'YYYYMMDD');
            IF to_regclass('webhooks.' || name) IS NULL THEN
                BEGIN
                    EXECUTE format(
                        'CREATE TABLE webhooks.%I PARTITION OF webhooks.%I '
                        'FOR VALUES FROM (%L) TO (%L)', name, parent,
                        (d::timestamp AT TIME ZONE 'UTC'),
                        ((d + 1)::timestamp AT TIME ZONE 'UTC'));
                    created := created + 1;
                EXCEPTION WHEN check_violation THEN
                    RAISE NOTICE 'partition % skipped: %_default holds rows for it',
                        name, parent;
                END;
            END IF;
        END LOOP;
    END LOOP;
    RETURN created;
END $$;

CREATE OR REPLACE FUNCTION webhooks.drop_old_partitions(retention interval DEFAULT '30 days')
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    dropped integer := 0;
    cutoff date := ((now() - retention) AT TIME ZONE 'UTC')::date;
BEGIN
    FOR r IN
        SELECT c.relname, p.relname AS parent FROM pg_inherits i
        JOIN pg_class c ON c.oid = i.inhrelid
        JOIN pg_class p ON p.oid = i.inhparent
        JOIN pg_namespace n ON n.oid = p.relnamespace
        WHERE n.nspname = 'webhooks' AND p.relname IN ('attempts', 'events')
          AND c.relname ~ ('^' || p.relname || '_[0-9]{8}$')
    LOOP
        IF to_date(right(r.relname, 8), 'YYYYMMDD') < cutoff THEN
            EXECUTE format('DROP TABLE webhooks.%I', r.relname);
            dropped := dropped + 1;
        END IF;
    END LOOP;
    RETURN dropped;
END $$;

SELECT webhooks.ensure_partitions(7);
