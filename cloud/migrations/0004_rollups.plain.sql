-- Plain PostgreSQL: machine-day sums as a materialized view, refreshed by the ingest workers.

CREATE MATERIALIZED VIEW machine_day AS
SELECT tenant_id,
       machine_id,
       plant_date,
       date_trunc('day', minute) AS bucket,
       sum(running_ms)::bigint        AS running_ms,
       sum(idle_ms)::bigint           AS idle_ms,
       sum(planned_stop_ms)::bigint   AS planned_stop_ms,
       sum(unplanned_stop_ms)::bigint AS unplanned_stop_ms,
       sum(changeover_ms)::bigint     AS changeover_ms,
       sum(offline_ms)::bigint        AS offline_ms,
       sum(produced)::bigint          AS produced,
       sum(reject)::bigint            AS reject,
       sum(stops)::bigint             AS stops,
       count(*)                       AS minutes
FROM telemetry
GROUP BY tenant_id, machine_id, plant_date, date_trunc('day', minute);

-- REFRESH ... CONCURRENTLY needs a unique index.
CREATE UNIQUE INDEX machine_day_key ON machine_day (tenant_id, machine_id, plant_date, bucket);
