-- Time-series tables: signed vouchers and per-minute telemetry (made hypertables by 0004 on TimescaleDB).

-- Quantities are numeric so that sums, and the money computed from them, are exact decimals.
CREATE TABLE vouchers (
    voucher_id        text NOT NULL,
    tenant_id         text NOT NULL,
    site_id           text NOT NULL,
    gateway_id        text NOT NULL,
    seq               bigint NOT NULL,
    contract_id       text NOT NULL,
    anchor_id         text NOT NULL,
    period_start      timestamptz NOT NULL,
    period_end        timestamptz NOT NULL,
    plant_date        date NOT NULL,
    metric            text NOT NULL,
    quantity          text NOT NULL,
    delta_point       numeric NOT NULL,
    delta_low         numeric NOT NULL,
    delta_high        numeric NOT NULL,
    reporting_value   numeric,
    baseline_value    numeric,
    running_day       boolean NOT NULL,
    sufficient        boolean NOT NULL,
    evidence_root     text NOT NULL,
    evidence_records  integer NOT NULL,
    issued_at         timestamptz NOT NULL,
    issuer            text NOT NULL,
    -- The signed voucher exactly as received; json keeps the bytes, which jsonb would reorder.
    document          json NOT NULL,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (voucher_id, period_start)
);
-- lz4 compresses a few-kilobyte document several times faster than the default pglz.
DO $$
BEGIN
    ALTER TABLE vouchers ALTER COLUMN document SET COMPRESSION lz4;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
    RAISE NOTICE 'lz4 is not available in this PostgreSQL build; voucher documents use the default compression';
END
$$;

CREATE INDEX vouchers_contract ON vouchers (tenant_id, contract_id, anchor_id, period_start)
    INCLUDE (quantity, delta_point, delta_low, running_day, sufficient, reporting_value);

CREATE TABLE telemetry (
    tenant_id          text NOT NULL,
    machine_id         text NOT NULL,
    minute             timestamptz NOT NULL,
    plant_date         date NOT NULL,
    site_id            text NOT NULL,
    gateway_id         text NOT NULL,
    running_ms         integer NOT NULL,
    idle_ms            integer NOT NULL,
    planned_stop_ms    integer NOT NULL,
    unplanned_stop_ms  integer NOT NULL,
    changeover_ms      integer NOT NULL,
    offline_ms         integer NOT NULL,
    produced           bigint NOT NULL,
    reject             bigint NOT NULL,
    stops              integer NOT NULL,
    reasons            jsonb NOT NULL,
    uncertain_ms       integer NOT NULL,
    PRIMARY KEY (tenant_id, machine_id, minute)
);
