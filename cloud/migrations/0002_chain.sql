-- Voucher chain index per gateway, chain progress, rejected payloads and the machines vouchers name.

-- One row per stored voucher: the idempotency key (gateway, seq), its chain hash and the
-- mutable verification state. The immutable documents live in "vouchers".
CREATE TABLE voucher_chain (
    gateway_id        text NOT NULL,
    seq               bigint NOT NULL,
    voucher_id        text NOT NULL UNIQUE,
    tenant_id         text NOT NULL,
    contract_id       text NOT NULL,
    anchor_id         text NOT NULL,
    hash              text NOT NULL,
    prev              text,
    period_start      timestamptz NOT NULL,
    stored_at         timestamptz NOT NULL DEFAULT now(),
    reproduced        boolean,
    reproduce_detail  text,
    reproduced_at     timestamptz,  -- the verdict's time, or the last attempt while pending
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX voucher_chain_contract ON voucher_chain (tenant_id, contract_id);
CREATE INDEX voucher_chain_pending ON voucher_chain (reproduced_at NULLS FIRST, stored_at) WHERE reproduced IS NULL;

CREATE TABLE gateway_chain (
    gateway_id          text PRIMARY KEY,
    contiguous_through  bigint NOT NULL DEFAULT 0,
    highest_seq         bigint NOT NULL DEFAULT 0,
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE rejections (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at     timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL CHECK (kind IN ('voucher', 'telemetry')),
    topic           text NOT NULL,
    tenant_id       text,
    gateway_id      text,
    voucher_id      text,
    contract_id     text,
    code            text NOT NULL,
    reason          text NOT NULL,
    payload_sha256  text NOT NULL,
    payload_size    integer NOT NULL,
    payload         bytea
);
CREATE INDEX rejections_tenant ON rejections (tenant_id, received_at);

CREATE TABLE machines (
    tenant_id           text NOT NULL,
    id                  text NOT NULL,
    site_id             text NOT NULL,
    mapping_hash        text NOT NULL,
    time_source         text NOT NULL,
    ideal_cycle_time_s  double precision,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);
