-- The digest of the contract terms (SHA-256 over their RFC 8785 canonical JSON) that each
-- invoice run was priced with. Runs computed before this column existed keep NULL.
ALTER TABLE invoice_runs ADD COLUMN contract_digest text CHECK (contract_digest ~ '^sha256:[0-9a-f]{64}$');
