-- Tenants, sites, gateways with their signing keys, users, API tokens, sessions, contracts and the audit log.

CREATE TABLE tenants (
    id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE sites (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          text NOT NULL CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    name        text NOT NULL,
    time_zone   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id)
);

-- Gateway ids are unique across tenants because voucher ids ("{gateway}:{seq}") are.
CREATE TABLE gateways (
    id          text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    tenant_id   text NOT NULL,
    site_id     text NOT NULL,
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (tenant_id, site_id) REFERENCES sites (tenant_id, id) ON DELETE CASCADE
);
CREATE INDEX gateways_tenant ON gateways (tenant_id, site_id);

CREATE TABLE gateway_keys (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    gateway_id      text NOT NULL REFERENCES gateways (id) ON DELETE CASCADE,
    tenant_id       text NOT NULL,
    public_key      text NOT NULL,
    valid_from      timestamptz NOT NULL,
    valid_until     timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (gateway_id, public_key),
    CHECK (valid_until IS NULL OR valid_until > valid_from)
);

CREATE TABLE users (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    username        text NOT NULL UNIQUE,
    display_name    text NOT NULL DEFAULT '',
    password_hash   text,
    roles           text[] NOT NULL,
    disabled        boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (roles <@ ARRAY['admin', 'csm', 'finance', 'auditor']::text[] AND cardinality(roles) > 0)
);
CREATE INDEX users_tenant ON users (tenant_id);

-- The secret part of a token is stored as its SHA-256 only; the token itself is shown once.
CREATE TABLE api_tokens (
    id              text PRIMARY KEY,
    tenant_id       text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id         bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name            text NOT NULL DEFAULT '',
    secret_sha256   text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    expires_at      timestamptz,
    revoked_at      timestamptz,
    last_used_at    timestamptz
);
CREATE INDEX api_tokens_tenant ON api_tokens (tenant_id);

CREATE TABLE sessions (
    id_sha256   text PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    tenant_id   text NOT NULL,
    csrf_token  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);

-- Every upload keeps its revision; the highest revision is the contract in force.
CREATE TABLE contracts (
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    id          text NOT NULL,
    revision    integer NOT NULL,
    source      text NOT NULL,
    document    jsonb NOT NULL,
    sha256      text NOT NULL,
    uploaded_at timestamptz NOT NULL DEFAULT now(),
    uploaded_by text NOT NULL,
    PRIMARY KEY (tenant_id, id, revision)
);

CREATE TABLE audit_log (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id   text,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    action      text NOT NULL,
    object_type text NOT NULL,
    object_id   text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at);
