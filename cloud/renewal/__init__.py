"""Renewal-prep packages: contract triggers, value summaries, voucher bundles and signed webhook delivery."""
