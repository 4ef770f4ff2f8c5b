-- A change counter per contract, bumped whenever a voucher of the contract is stored, changes
-- state (a gap fills, a recomputation ends) or is rejected, so reports can tell cheaply that
-- nothing changed.

CREATE TABLE contract_activity (
    tenant_id    text NOT NULL,
    contract_id  text NOT NULL,
    version      bigint NOT NULL DEFAULT 1,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, contract_id)
);

-- The counter replaces the index-only scan that 0005 added the INCLUDE columns for.
DROP INDEX voucher_chain_contract;
CREATE INDEX voucher_chain_contract ON voucher_chain (tenant_id, contract_id);
