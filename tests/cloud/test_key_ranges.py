"""Messages for a voucher signed by a key outside the sequence range a rotation gave it."""

from __future__ import annotations

import datetime as dt

import pytest

from valuegate.cloud.verify import GatewayInfo, KeyInfo, _find_key
from valuegate.edge.protocol.voucher import VoucherError

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _gateway(*keys: KeyInfo) -> GatewayInfo:
    return GatewayInfo("gw1", "t1", "s1", "UTC", keys)


def test_key_replaced_at_one_signs_nothing() -> None:
    # Rotated at sequence 1: the first key never signed anything.
    gateway = _gateway(KeyInfo(1, "z6MkFirst", T0, None, None, None, 0), KeyInfo(2, "z6MkSecond", T0, None, None, 1, None))
    with pytest.raises(VoucherError) as caught:
        _find_key(gateway, "did:key:z6MkFirst", T0, T0, "gw1:3")
    assert caught.value.code == "key_not_valid"
    assert "key 1 signs no sequence (replaced from sequence 1) of gateway 'gw1' after a rotation, not 3" in str(caught.value)
    assert _find_key(gateway, "did:key:z6MkSecond", T0, T0, "gw1:3").key_id == 2


def test_key_outside_range_names_range() -> None:
    gateway = _gateway(KeyInfo(1, "z6MkFirst", T0, None, None, None, 4), KeyInfo(2, "z6MkSecond", T0, None, None, 5, None))
    with pytest.raises(VoucherError, match=r"key 1 signs sequences 1\.\.4 of gateway 'gw1' after a rotation, not 7"):
        _find_key(gateway, "did:key:z6MkFirst", T0, T0, "gw1:7")
    with pytest.raises(VoucherError, match=r"key 2 signs sequences 5\.\.on of gateway 'gw1' after a rotation, not 2"):
        _find_key(gateway, "did:key:z6MkSecond", T0, T0, "gw1:2")
