-- 002_maintenance.sql: one call that keeps the attempt history healthy.
--
-- Workers call webhooks.maintain() at start and every maintenance
-- interval; any number of them may, since only one at a time does the work.
-- Operators can run it by hand or from cron just the same.

CREATE OR REPLACE FUNCTION webhooks.maintain(
    retention interval DEFAULT '30 days',
    days_ahead integer DEFAULT 7)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    created integer;
    dropped integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(72616002) THEN
        RETURN 'skipped: another session is maintaining the history';
    END IF;
    created := webhooks.ensure_partitions(days_ahead);
    dropped := webhooks.drop_old_partitions(retention);
    RETURN format('%s partitions created, %s dropped', created, dropped);
END $$;
