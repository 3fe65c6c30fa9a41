-- 005_endpoint_health.sql: endpoints that fail every attempt for a
-- sustained period are disabled automatically, with the reason recorded.
--
-- Workers call webhooks.disable_failing_endpoints(WEBHOOK_DISABLE_AFTER)
-- with their history maintenance. An endpoint is failing when it has a
-- failed attempt older than the period and no successful attempt since
-- the first failure of that streak. Attempts the engine did not make
-- (endpoint_disabled) do not count.

CREATE OR REPLACE FUNCTION webhooks.disable_failing_endpoints(period interval)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    r record;
    n integer := 0;
BEGIN
    FOR r IN
        SELECT e.id, f.first_failure
        FROM webhooks.endpoints e
        CROSS JOIN LATERAL (
            SELECT max(a.attempted_at) AS at FROM webhooks.attempts a
            WHERE a.endpoint_id = e.id AND a.outcome = 'succeeded'
        ) s
        CROSS JOIN LATERAL (
            SELECT min(a.attempted_at) AS first_failure FROM webhooks.attempts a
            WHERE a.endpoint_id = e.id AND a.outcome = 'failed'
              AND a.error_class IS DISTINCT FROM 'endpoint_disabled'
              AND a.attempted_at > coalesce(s.at, '-infinity')
        ) f
        WHERE NOT e.disabled AND f.first_failure < now() - period
    LOOP
        UPDATE webhooks.endpoints
        SET disabled = true, disabled_at = now(), updated_at = now(),
            disabled_reason = format(
                'every attempt failed since %s (longer than %s)',
                to_char(r.first_failure AT TIME ZONE 'UTC',
                        'YYYY-MM-DD"T"HH24:MI:SS"Z"'), period)
        WHERE id = r.id AND NOT disabled;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;
