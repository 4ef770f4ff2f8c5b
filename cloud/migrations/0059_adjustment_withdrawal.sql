-- A non-routine adjustment can be withdrawn (a wrong date range, a day entered twice) with a reason. The row stays,
-- so that every invoice and note issued while it applied can still be re-derived; from the withdrawal on it
-- excludes nothing, and the next invoice run bills the days again with a debit note.
ALTER TABLE nonroutine_adjustments
    ADD COLUMN withdrawn_at timestamptz,
    ADD COLUMN withdrawn_by text,
    ADD COLUMN withdraw_reason text,
    ADD CONSTRAINT nonroutine_adjustments_withdrawal CHECK (
        (withdrawn_at IS NULL AND withdrawn_by IS NULL AND withdraw_reason IS NULL)
        OR (withdrawn_at IS NOT NULL AND withdrawn_by IS NOT NULL AND length(btrim(withdraw_reason)) > 0)
    );

-- A repeated form submission stored the same adjustment again. Earlier copies stay in force as one: every later
-- copy of an open adjustment (same contract, anchor, dates and reason) is withdrawn here. It took out the same
-- days as the first, so no amount changes.
UPDATE nonroutine_adjustments AS later
SET withdrawn_at = now(), withdrawn_by = 'migration', withdraw_reason = 'duplicate of NRA-' || first.id
FROM nonroutine_adjustments AS first
WHERE later.withdrawn_at IS NULL AND first.withdrawn_at IS NULL AND first.id < later.id
  AND first.tenant_id = later.tenant_id AND first.contract_id = later.contract_id
  AND first.anchor_id IS NOT DISTINCT FROM later.anchor_id
  AND first.first_date = later.first_date AND first.last_date = later.last_date AND first.reason = later.reason
  AND first.id = (
      SELECT min(x.id) FROM nonroutine_adjustments x
      WHERE x.tenant_id = later.tenant_id AND x.contract_id = later.contract_id AND x.anchor_id IS NOT DISTINCT FROM later.anchor_id
        AND x.first_date = later.first_date AND x.last_date = later.last_date AND x.reason = later.reason
  );

-- From now on the database stores one open copy; the application returns the existing one instead.
CREATE UNIQUE INDEX nonroutine_adjustments_open
    ON nonroutine_adjustments (tenant_id, contract_id, coalesce(anchor_id, ''), first_date, last_date, reason)
    WHERE withdrawn_at IS NULL;
