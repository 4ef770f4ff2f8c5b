-- TimescaleDB: machine_reason_day is a view with the columns of the plain variant's table, so the
-- downtime Pareto runs the same query on both. The view groups the minute records on every read.
-- NOTE: this file has not run, because no TimescaleDB server was available to test it. On TimescaleDB
-- the Pareto therefore costs what it did before this version. A continuous aggregate would have to
-- expand the reasons object with jsonb_each_text in its FROM clause, which was not tried.
CREATE VIEW machine_reason_day AS
SELECT t.tenant_id,
       t.machine_id,
       t.plant_date,
       r.key                        AS reason,
       sum(r.value::bigint)::bigint AS ms,
       count(*)                     AS minutes
FROM telemetry t, jsonb_each_text(t.reasons) r
WHERE t.reasons <> '{}'::jsonb
GROUP BY t.tenant_id, t.machine_id, t.plant_date, r.key;
