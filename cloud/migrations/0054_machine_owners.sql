-- The gateway whose telemetry measures each machine of a tenant, from an instant on. Telemetry
-- is keyed by tenant, machine and minute, so a machine id has one source at a time: the first
-- gateway that sends records of a machine owns it from the start (year 1), and a move
-- (cloud admin machine-move) adds a row naming the next gateway from the instant of the move.
CREATE TABLE machine_owners (
    tenant_id   text NOT NULL,
    machine_id  text NOT NULL,
    since       timestamptz NOT NULL DEFAULT '0001-01-01 00:00:00+00',
    gateway_id  text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, machine_id, since)
);

-- Machines with stored telemetry belong to the gateway that sent their earliest minute.
INSERT INTO machine_owners (tenant_id, machine_id, gateway_id, claimed_at)
SELECT DISTINCT ON (tenant_id, machine_id) tenant_id, machine_id, gateway_id, minute
FROM telemetry
ORDER BY tenant_id, machine_id, minute;
