-- Settlement: non-routine adjustments, invoice runs, invoices and credit/debit notes with their lines.

-- A CSM's record that takes days out of settlement (for example a line rebuild), with its reason.
CREATE TABLE nonroutine_adjustments (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id    text NOT NULL,
    contract_id  text NOT NULL,
    anchor_id    text,
    kind         text NOT NULL CHECK (kind IN ('exclude_period')),
    first_date   date NOT NULL,
    last_date    date NOT NULL,
    reason       text NOT NULL CHECK (length(btrim(reason)) > 0),
    created_by   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK (last_date >= first_date)
);
CREATE INDEX nonroutine_adjustments_contract ON nonroutine_adjustments (tenant_id, contract_id);

-- One run per contract and billing period; the invoice number derives from both.
CREATE TABLE invoice_runs (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id          text NOT NULL,
    contract_id        text NOT NULL,
    contract_revision  integer NOT NULL,
    period_first       date NOT NULL,
    period_last        date NOT NULL,
    invoice_number     text NOT NULL UNIQUE,
    status             text NOT NULL CHECK (status IN ('draft', 'approved')),
    inputs_digest      text NOT NULL,
    created_by         text NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    computed_at        timestamptz NOT NULL DEFAULT now(),
    approved_by        text,
    approved_at        timestamptz,
    UNIQUE (tenant_id, contract_id, period_first, period_last),
    CHECK (period_last >= period_first),
    CHECK ((status = 'approved') = (approved_at IS NOT NULL))
);

CREATE TABLE invoice_documents (
    number        text PRIMARY KEY,
    run_id        bigint NOT NULL REFERENCES invoice_runs (id) ON DELETE CASCADE,
    tenant_id     text NOT NULL,
    contract_id   text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('invoice', 'credit_note', 'debit_note')),
    period_first  date NOT NULL,
    period_last   date NOT NULL,
    corrects      text REFERENCES invoice_documents (number),
    currency      text NOT NULL,
    total         numeric NOT NULL,
    status        text NOT NULL CHECK (status IN ('draft', 'issued')),
    issued_at     timestamptz,
    record        jsonb NOT NULL,
    CHECK ((kind = 'invoice') = (corrects IS NULL))
);
CREATE INDEX invoice_documents_contract ON invoice_documents (tenant_id, contract_id, period_first);

CREATE TABLE invoice_lines (
    document_number    text NOT NULL REFERENCES invoice_documents (number) ON DELETE CASCADE,
    line_no            integer NOT NULL,
    anchor_id          text NOT NULL,
    period_first       date NOT NULL,
    period_last        date NOT NULL,
    price_kind         text NOT NULL,
    mode               text NOT NULL,
    unit_price         numeric NOT NULL,
    quantity           numeric NOT NULL,
    days               integer NOT NULL,
    amount             numeric NOT NULL,
    previously_billed  numeric,
    recomputed         numeric,
    cap_applied        boolean NOT NULL,
    floor_applied      boolean NOT NULL,
    voucher_ids        text[] NOT NULL,
    excluded           jsonb NOT NULL DEFAULT '[]'::jsonb,
    PRIMARY KEY (document_number, line_no)
);

-- An issued document and its lines are never edited or deleted: corrections are new notes.
CREATE FUNCTION valuegate_reject_issued_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    doc_number text;
BEGIN
    IF TG_TABLE_NAME = 'invoice_documents' THEN
        IF OLD.status = 'issued' THEN
            RAISE EXCEPTION 'invoice document % is issued and cannot be changed; issue a credit or debit note instead', OLD.number
                USING ERRCODE = 'check_violation';
        END IF;
    ELSE
        doc_number := OLD.document_number;
        IF EXISTS (SELECT 1 FROM invoice_documents d WHERE d.number = doc_number AND d.status = 'issued') THEN
            RAISE EXCEPTION 'lines of issued invoice document % cannot be changed; issue a credit or debit note instead', doc_number
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER invoice_documents_issued_frozen BEFORE UPDATE OR DELETE ON invoice_documents
    FOR EACH ROW EXECUTE FUNCTION valuegate_reject_issued_change();
CREATE TRIGGER invoice_lines_issued_frozen BEFORE UPDATE OR DELETE ON invoice_lines
    FOR EACH ROW EXECUTE FUNCTION valuegate_reject_issued_change();
