-- Renewal-prep packages, the webhook each tenant receives them on, and every delivery attempt.

-- One package per contract and trigger firing; trigger_key names the trigger and its parameters.
CREATE TABLE renewal_packages (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id      text NOT NULL,
    contract_id    text NOT NULL,
    trigger_key    text NOT NULL,
    trigger_kind   text NOT NULL CHECK (trigger_kind IN ('target_met', 'days_before_end', 'value_over')),
    fired_at       timestamptz NOT NULL,
    detail         jsonb NOT NULL,
    summary_html   jsonb NOT NULL,
    archive        bytea NOT NULL,
    archive_sha256 text NOT NULL,
    talking_points jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, contract_id, trigger_key)
);

-- The secret signs deliveries with HMAC-SHA256; it is never logged or shown after it is set.
CREATE TABLE webhook_endpoints (
    tenant_id   text PRIMARY KEY,
    url         text NOT NULL CHECK (url ~ '^https?://'),
    secret      text NOT NULL CHECK (length(secret) >= 16),
    enabled     boolean NOT NULL DEFAULT true,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    package_id   bigint NOT NULL REFERENCES renewal_packages (id) ON DELETE CASCADE,
    tenant_id    text NOT NULL,
    url          text NOT NULL,
    attempt      integer NOT NULL,
    status_code  integer,
    error        text,
    delivered    boolean NOT NULL,
    started_at   timestamptz NOT NULL,
    duration_ms  integer NOT NULL
);
CREATE INDEX webhook_deliveries_package ON webhook_deliveries (package_id, attempt);
