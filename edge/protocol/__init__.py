"""Voucher protocol v1: canonical JSON, eddsa-jcs-2022 proofs, chain rules.

This package is the only part of the edge that the cloud and the offline
verifier import, besides the kernels.
"""
