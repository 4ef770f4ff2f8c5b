-- An audit record's time is when it was written, not when its transaction began. A request that waited for
-- the settlement or package lock used to get an earlier time than records committed while it waited, so the
-- time order of the log differed from the order of its ids. The API lists by id now; this keeps the times
-- in the same order.
ALTER TABLE audit_log ALTER COLUMN at SET DEFAULT clock_timestamp();
CREATE INDEX audit_log_tenant_id ON audit_log (tenant_id, id);
