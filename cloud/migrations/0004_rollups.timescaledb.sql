-- valuegate: no-transaction
-- TimescaleDB: hypertables, a real-time continuous aggregate per machine-day, compression settings.
-- The compression and retention schedules depend on settings and are applied by valuegate.cloud.db.

CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('telemetry', 'minute', chunk_time_interval => INTERVAL '7 days', if_not_exists => TRUE);
SELECT create_hypertable('vouchers', 'period_start', chunk_time_interval => INTERVAL '30 days', if_not_exists => TRUE);

ALTER TABLE telemetry SET (timescaledb.compress, timescaledb.compress_segmentby = 'tenant_id, machine_id', timescaledb.compress_orderby = 'minute');
ALTER TABLE vouchers SET (timescaledb.compress, timescaledb.compress_segmentby = 'tenant_id, contract_id', timescaledb.compress_orderby = 'anchor_id, period_start');

CREATE MATERIALIZED VIEW IF NOT EXISTS machine_day
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT tenant_id,
       machine_id,
       plant_date,
       time_bucket(INTERVAL '1 day', minute) AS bucket,
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
GROUP BY tenant_id, machine_id, plant_date, time_bucket(INTERVAL '1 day', minute)
WITH NO DATA;

SELECT add_continuous_aggregate_policy('machine_day', start_offset => NULL, end_offset => INTERVAL '1 hour',
                                       schedule_interval => INTERVAL '1 hour', if_not_exists => TRUE);
