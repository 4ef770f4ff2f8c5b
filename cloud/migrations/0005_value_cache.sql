-- Let the value report check with an index-only scan whether a contract's vouchers changed.

DROP INDEX voucher_chain_contract;
CREATE INDEX voucher_chain_contract ON voucher_chain (tenant_id, contract_id) INCLUDE (stored_at, reproduced_at);
