-- 014_api_tokens.sql: the bearer tokens of the HTTP API (webhook-api).
--
-- A token is shown once, when `webhookctl token create` makes it; only the
-- SHA-256 of its text is stored, so this table opens nothing. Rows are
-- written and read by lib/tokens.c only. A token is never deleted, only
-- revoked (revoked_at), so listings keep its history.
--
-- scope: 'admin' (every route, every app; never an app), 'app' (its app
-- only; always has one), 'ingest' (publishing only) or 'read' (GET routes
-- only); ingest and read tokens may name an app or reach every app.
-- created_at is the server's clock (listings sort by it); expires_at is
-- computed by the creator from its own.

CREATE TABLE IF NOT EXISTS webhooks.api_tokens (
    id               text PRIMARY KEY CHECK (id ~ '^tok_[a-z2-7]{16}$'),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    app              text CHECK (length(app) BETWEEN 1 AND 128),
    scope            text NOT NULL
                     CHECK (scope IN ('admin', 'app', 'ingest', 'read')),
    token_sha256     bytea NOT NULL CHECK (length(token_sha256) = 32),
    allow_cidrs      text CHECK (length(allow_cidrs) BETWEEN 1 AND 16384),
    rate_limit_per_s integer CHECK (rate_limit_per_s BETWEEN 1 AND 1000000),
    expires_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    revoked_at       timestamptz,
    last_used_at     timestamptz,
    CONSTRAINT api_tokens_scope_app
        CHECK ((scope <> 'app' OR app IS NOT NULL) AND
               (scope <> 'admin' OR app IS NULL))
);

-- API servers cache tokens and drop one when it changes. A use
-- (last_used_at, written at most once a minute per token) changes nothing
-- a server caches, so it notifies nobody.
CREATE OR REPLACE FUNCTION webhooks.notify_api_token_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('webhooks_api_tokens', OLD.id);
    ELSE
        PERFORM pg_notify('webhooks_api_tokens', NEW.id);
    END IF;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS api_tokens_notify ON webhooks.api_tokens;
CREATE TRIGGER api_tokens_notify
    AFTER INSERT OR DELETE OR UPDATE OF id, name, app, scope, token_sha256,
        allow_cidrs, rate_limit_per_s, expires_at, revoked_at
    ON webhooks.api_tokens
    FOR EACH ROW EXECUTE FUNCTION webhooks.notify_api_token_change();
