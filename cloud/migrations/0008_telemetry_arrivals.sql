-- Reproduction order: pending vouchers whose telemetry has just arrived go before the long backlog.

-- One row per gateway and plant date whose telemetry was stored since the pending scan last took
-- that key's vouchers. The telemetry transaction upserts it; the scan deletes the rows it used,
-- and rows that matched no pending voucher for two days.
CREATE TABLE telemetry_arrivals (
    tenant_id   text NOT NULL,
    gateway_id  text NOT NULL,
    plant_date  date NOT NULL,
    noted_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, gateway_id, plant_date)
);

-- Finds the pending vouchers of one gateway around a plant date; only pending rows are indexed.
CREATE INDEX voucher_chain_pending_gateway ON voucher_chain (gateway_id, period_start) WHERE reproduced IS NULL;
