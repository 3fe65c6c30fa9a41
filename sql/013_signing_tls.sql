-- 013_signing_tls.sql: per-endpoint signature scheme and TLS client
-- identity.
--
-- signature says which signatures a delivery carries: 'hmac' ("v1",
-- whsec_ secrets), 'ed25519' ("v1a", whsk_ keys) or 'both'. The keys of
-- either kind live in secrets_sealed, as before, so they rotate and are
-- sealed the same way.
--
-- An endpoint that requires TLS client authentication (mTLS) has a client
-- certificate (PEM, with its chain) and its private key, sealed like the
-- secrets (aad: the endpoint id and ":tls_client_key"); both or neither.
-- tls_ca_bundle (PEM) replaces the worker's CA file for this endpoint's
-- server certificate. The sizes bound what a worker loads per endpoint.

ALTER TABLE webhooks.endpoints
    ADD COLUMN IF NOT EXISTS signature text NOT NULL DEFAULT 'hmac'
        CHECK (signature IN ('hmac', 'ed25519', 'both')),
    ADD COLUMN IF NOT EXISTS tls_client_cert text
        CHECK (length(tls_client_cert) BETWEEN 1 AND 65536),
    ADD COLUMN IF NOT EXISTS tls_client_key_sealed bytea
        CHECK (length(tls_client_key_sealed) BETWEEN 1 AND 16384),
    ADD COLUMN IF NOT EXISTS tls_ca_bundle text
        CHECK (length(tls_ca_bundle) BETWEEN 1 AND 262144);

DO $$
BEGIN
    ALTER TABLE webhooks.endpoints ADD CONSTRAINT endpoints_tls_client_pair
        CHECK ((tls_client_cert IS NULL) = (tls_client_key_sealed IS NULL));
EXCEPTION WHEN duplicate_object THEN NULL;
END $$;
