-- Key rotation statements: the previous key signs the next one, which signs vouchers from from_seq on.

ALTER TABLE gateway_keys ADD COLUMN from_seq bigint;
ALTER TABLE gateway_keys ADD COLUMN until_seq bigint;

CREATE TABLE key_rotations (
    gateway_id    text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    tenant_id     text NOT NULL,
    from_seq      bigint NOT NULL,
    previous_key  text NOT NULL,
    next_key      text NOT NULL,
    statement     json NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, from_seq)
);
