-- An approved invoice run keeps its period, number, inputs and approver; only drafts change.

CREATE FUNCTION valuegate_reject_approved_run_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'approved' THEN
        RAISE EXCEPTION 'invoice run % (%) is approved and cannot be changed or deleted', OLD.id, OLD.invoice_number
            USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER invoice_runs_approved_frozen BEFORE UPDATE OR DELETE ON invoice_runs
    FOR EACH ROW EXECUTE FUNCTION valuegate_reject_approved_run_change();
