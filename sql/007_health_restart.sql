-- 007_health_restart.sql: an endpoint's failing streak starts again when
-- it is enabled or edited.
--
-- disable_failing_endpoints() (005) counted every failure since the last
-- success, so an endpoint that was disabled for failing and then enabled
-- was disabled again by the next maintenance pass, before its pending
-- retry could reach it: the failures from before the enable still made a
-- streak older than the period. Failures before the endpoint's last
-- change (updated_at: enable, disable, edit) no longer count.

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
              AND a.attempted_at > e.updated_at
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
