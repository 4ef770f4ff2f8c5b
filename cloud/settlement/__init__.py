"""Settlement: outcome pricing, invoice runs from verified vouchers, credit and debit notes, exports."""
