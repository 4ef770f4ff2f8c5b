-- Plain PostgreSQL: downtime per reason code and machine-day in a table that statement triggers on
-- telemetry keep current, the same way 0009_machine_day_table.plain.sql keeps machine_day.
-- The downtime Pareto read each minute record's reasons object before; at a year of minutes per
-- machine that grouped read took seconds.

-- ms is the sum of the reason's milliseconds in the telemetry rows of the key; minutes counts those
-- rows, so that a key whose rows are all deleted goes away even when its milliseconds were zero.
CREATE TABLE machine_reason_day (
    tenant_id   text NOT NULL,
    machine_id  text NOT NULL,
    plant_date  date NOT NULL,
    reason      text NOT NULL,
    ms          bigint NOT NULL,
    minutes     bigint NOT NULL,
    CONSTRAINT machine_reason_day_key PRIMARY KEY (tenant_id, machine_id, plant_date, reason)
);

-- Adds the reason milliseconds of inserted rows and subtracts those of deleted rows, per
-- (machine, plant date, reason). As for machine_day, adding deltas keeps concurrent transactions
-- exact, and rows go in key order so that two inserting transactions lock shared keys in the same order.
CREATE FUNCTION machine_reason_day_follow_telemetry() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE machine_reason_day;
        RETURN NULL;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO machine_reason_day AS d
        SELECT t.tenant_id, t.machine_id, t.plant_date, r.key, sum(r.value::bigint), count(*)
        FROM new_rows t, jsonb_each_text(t.reasons) r
        WHERE t.reasons <> '{}'::jsonb
        GROUP BY 1, 2, 3, 4
        ORDER BY 1, 2, 3, 4
        ON CONFLICT ON CONSTRAINT machine_reason_day_key DO UPDATE SET
            ms = d.ms + excluded.ms,
            minutes = d.minutes + excluded.minutes;
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE machine_reason_day AS d SET
            ms = d.ms - g.ms,
            minutes = d.minutes - g.minutes
        FROM (SELECT t.tenant_id, t.machine_id, t.plant_date, r.key AS reason, sum(r.value::bigint) AS ms, count(*) AS minutes
              FROM old_rows t, jsonb_each_text(t.reasons) r
              WHERE t.reasons <> '{}'::jsonb
              GROUP BY 1, 2, 3, 4) AS g
        WHERE (d.tenant_id, d.machine_id, d.plant_date, d.reason) = (g.tenant_id, g.machine_id, g.plant_date, g.reason);
        DELETE FROM machine_reason_day AS d
        USING (SELECT DISTINCT t.tenant_id, t.machine_id, t.plant_date, r.key AS reason
               FROM old_rows t, jsonb_each_text(t.reasons) r
               WHERE t.reasons <> '{}'::jsonb) AS g
        WHERE (d.tenant_id, d.machine_id, d.plant_date, d.reason) = (g.tenant_id, g.machine_id, g.plant_date, g.reason)
          AND d.minutes = 0;
    END IF;
    RETURN NULL;
END
$$;

-- Transition tables allow one event per trigger, so each event has its own trigger.
CREATE TRIGGER telemetry_machine_reason_day_insert AFTER INSERT ON telemetry
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION machine_reason_day_follow_telemetry();
CREATE TRIGGER telemetry_machine_reason_day_update AFTER UPDATE ON telemetry
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION machine_reason_day_follow_telemetry();
CREATE TRIGGER telemetry_machine_reason_day_delete AFTER DELETE ON telemetry
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION machine_reason_day_follow_telemetry();
CREATE TRIGGER telemetry_machine_reason_day_truncate AFTER TRUNCATE ON telemetry
    FOR EACH STATEMENT EXECUTE FUNCTION machine_reason_day_follow_telemetry();

-- The triggers above lock telemetry against writes until this migration commits, so no row
-- stored meanwhile is missing from the sums.
INSERT INTO machine_reason_day
SELECT t.tenant_id, t.machine_id, t.plant_date, r.key, sum(r.value::bigint), count(*)
FROM telemetry t, jsonb_each_text(t.reasons) r
WHERE t.reasons <> '{}'::jsonb
GROUP BY 1, 2, 3, 4;
