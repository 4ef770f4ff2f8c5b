-- The vouchers of a run's billing period that a gap in their gateway's chain keeps from billing, per gateway,
-- as valuegate.cloud.settlement.gaps.gap_waiting returns them. The run page, PDF and CSV name them, so that
-- finance does not approve a short (or 0.00) invoice without knowing why. Runs computed before this
-- migration show none; a re-run of a draft fills it in.
ALTER TABLE invoice_runs ADD COLUMN gap_waiting jsonb NOT NULL DEFAULT '[]'::jsonb;
