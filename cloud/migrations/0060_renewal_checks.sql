-- The latest renewal check of each contract, whether a user started it from the contract page or the periodic check ran it.
-- A check runs in the background and writes its step here as it goes, so the page can show its progress.
-- A row left 'running' by a process that stopped is told apart by its advisory lock, which ended with that process.
CREATE TABLE renewal_checks (
    tenant_id       text NOT NULL,
    contract_id     text NOT NULL,
    state           text NOT NULL CHECK (state IN ('running', 'done', 'failed')),
    requested_by    text NOT NULL,
    step            text NOT NULL,
    step_number     integer NOT NULL,
    step_count      integer NOT NULL,
    started_at      timestamptz NOT NULL,
    step_started_at timestamptz NOT NULL,
    finished_at     timestamptz,
    -- The packages this check built.
    packages        bigint[] NOT NULL DEFAULT '{}',
    -- Triggers that fired while the contract had no verified voucher: key, kind and detail of each. No package is
    -- built for them until a check finds a verified voucher.
    waiting         jsonb NOT NULL DEFAULT '[]',
    error           text,
    PRIMARY KEY (tenant_id, contract_id)
);
