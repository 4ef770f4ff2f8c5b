-- One rejection row per payload, cause and topic. A gateway resends a rejected voucher on every resend
-- request, and each receipt used to insert a row holding up to 64 KiB of payload, so one stuck voucher
-- grew the table by a row per resend interval. A repeat now adds to received_count and moves
-- last_received_at; received_at stays the first receipt, which decides whether a stored voucher
-- superseded the rejection (valuegate.cloud.reports.SUPERSEDED_SQL).

ALTER TABLE rejections
    ADD COLUMN received_count integer NOT NULL DEFAULT 1 CHECK (received_count >= 1),
    ADD COLUMN last_received_at timestamptz;

-- Fold the rows stored so far: the oldest row of each group stays, counts every receipt, and takes the
-- reason and hints of the newest one, as a repeat does on ingest.
WITH ranked AS (
    SELECT id, received_at, reason, voucher_id, contract_id,
           first_value(id) OVER oldest AS keep_id,
           row_number() OVER newest AS newest_rank,
           count(*) OVER everything AS receipts,
           max(received_at) OVER everything AS last_at
    FROM rejections
    WINDOW everything AS (PARTITION BY md5(topic), payload_sha256, code),
           oldest AS (PARTITION BY md5(topic), payload_sha256, code ORDER BY received_at, id),
           newest AS (PARTITION BY md5(topic), payload_sha256, code ORDER BY received_at DESC, id DESC)
)
UPDATE rejections r
SET received_count = ranked.receipts, last_received_at = ranked.last_at,
    reason = ranked.reason, voucher_id = ranked.voucher_id, contract_id = ranked.contract_id
FROM ranked
WHERE ranked.newest_rank = 1 AND r.id = ranked.keep_id;

-- Every group has its oldest row updated above, so the rows still without last_received_at are its repeats.
DELETE FROM rejections WHERE last_received_at IS NULL;

ALTER TABLE rejections ALTER COLUMN last_received_at SET DEFAULT now();
ALTER TABLE rejections ALTER COLUMN last_received_at SET NOT NULL;

-- The topic goes into the key as its MD5, because MQTT allows topics of up to 65,535 bytes and a B-tree
-- entry holds about 2,700. MD5 only shortens it here; payload_sha256 is the payload's identity.
CREATE UNIQUE INDEX rejections_payload_cause ON rejections (payload_sha256, code, md5(topic));

-- The rejection lists show the most recently received first.
DROP INDEX rejections_tenant;
CREATE INDEX rejections_tenant ON rejections (tenant_id, last_received_at);
