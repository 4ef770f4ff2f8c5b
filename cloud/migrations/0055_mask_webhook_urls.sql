-- Mask credentials in webhook URLs that deliveries and the audit log stored before they were masked on write:
-- user info becomes ***@, each query value *** (a piece without "=" wholly ***), and a fragment #***.
-- valuegate.cloud.renewal.targets.mask_url masks new values the same way.
-- webhook_endpoints.url keeps the full URL, because the delivery request needs it.

CREATE OR REPLACE FUNCTION pg_temp.mask_webhook_query(query text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT string_agg(CASE WHEN strpos(piece, '=') > 0 THEN split_part(piece, '=', 1) || '=***'
                           WHEN piece = '' THEN ''
                           ELSE '***' END, '&' ORDER BY n)
    FROM regexp_split_to_table(query, '&') WITH ORDINALITY AS pieces (piece, n)
$$;

CREATE OR REPLACE FUNCTION pg_temp.mask_webhook_url(url text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN m IS NULL THEN url ELSE
        m[1] || regexp_replace(m[2], '^.*@', '***@') || m[3]
        || CASE WHEN coalesce(m[4], '') = '' THEN '' ELSE '?' || pg_temp.mask_webhook_query(m[4]) END
        || CASE WHEN coalesce(m[5], '#') = '#' THEN '' ELSE '#***' END
    END
    FROM (SELECT regexp_match(url, '^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)([^?#]*)(?:\?([^#]*))?(#.*)?$') AS m) AS parsed
$$;

UPDATE webhook_deliveries SET url = pg_temp.mask_webhook_url(url) WHERE url <> pg_temp.mask_webhook_url(url);

UPDATE audit_log SET detail = jsonb_set(detail, '{url}', to_jsonb(pg_temp.mask_webhook_url(detail ->> 'url')))
WHERE action IN ('webhook.set', 'renewal.redeliver') AND jsonb_typeof(detail -> 'url') = 'string'
  AND detail ->> 'url' <> pg_temp.mask_webhook_url(detail ->> 'url');
