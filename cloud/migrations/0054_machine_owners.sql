-- The gateway whose telemetry measures each machine of a tenant. Telemetry is keyed by
-- tenant, machine and minute, so a machine id has one source: the first gateway that sends
-- records of a machine owns it until an administrator moves it (cloud admin machine-move).
CREATE TABLE machine_owners (
    tenant_id   text NOT NULL,
    machine_id  text NOT NULL,
    gateway_id  text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, machine_id)
);

-- Machines with stored telemetry belong to the gateway that sent their earliest minute.
INSERT INTO machine_owners (tenant_id, machine_id, gateway_id, claimed_at)
SELECT DISTINCT ON (tenant_id, machine_id) tenant_id, machine_id, gateway_id, minute
FROM telemetry
ORDER BY tenant_id, machine_id, minute;
