"""Register decoding and encoding: every type in every byte/word order, checked against hand-computed words."""

from __future__ import annotations

import struct

import pytest
from pymodbus.client import AsyncModbusTcpClient

from valuegate.adapters.decode import decode_registers, encode_registers, make_decoder, register_count
from valuegate.adapters.modbus_plan import plan_requests
from valuegate.adapters.tagmap import ModbusTag
from valuegate.adapters.values import implausible_time

# (type, value, {order: wire registers}) worked out by hand from the big-endian bytes A B C D (E F G H).
TABLE = [
    ("int16", 258, {"ABCD": [0x0102], "CDAB": [0x0102], "BADC": [0x0201], "DCBA": [0x0201]}),
    ("int16", -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("uint16", 65534, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("int32", 0x01020304, {"ABCD": [0x0102, 0x0304], "CDAB": [0x0304, 0x0102], "BADC": [0x0201, 0x0403], "DCBA": [0x0403, 0x0201]}),
    ("int32", -2, {"ABCD": [0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF], "BADC": [0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF]}),
    ("uint32", 0xFFFFFFFE, {"ABCD": [0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF], "BADC": [0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF]}),
    ("float32", 1.5, {"ABCD": [0x3FC0, 0x0000], "CDAB": [0x0000, 0x3FC0], "BADC": [0xC03F, 0x0000], "DCBA": [0x0000, 0xC03F]}),
    (
        "int64",
        0x0102030405060708,
        {
            "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
            "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
            "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
            "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
        },
    ),
    (
        "int64",
        -3,
        {
            "ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFD],
            "CDAB": [0xFFFD, 0xFFFF, 0xFFFF, 0xFFFF],
            "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFDFF],
            "DCBA": [0xFDFF, 0xFFFF, 0xFFFF, 0xFFFF],
        },
    ),
    (
        "uint64",
        0xF102030405060708,
        {
            "ABCD": [0xF102, 0x0304, 0x0506, 0x0708],
            "CDAB": [0x0708, 0x0506, 0x0304, 0xF102],
            "BADC": [0x02F1, 0x0403, 0x0605, 0x0807],
            "DCBA": [0x0807, 0x0605, 0x0403, 0x02F1],
        },
    ),
    (
        "float64",
        1.0,
        {
            "ABCD": [0x3FF0, 0, 0, 0],
            "CDAB": [0, 0, 0, 0x3FF0],
            "BADC": [0xF03F, 0, 0, 0],
            "DCBA": [0, 0, 0, 0xF03F],
        },
    ),
]
CASES = [(type_, value, order, words) for type_, value, by_order in TABLE for order, words in by_order.items()]


@pytest.mark.parametrize(("type_", "value", "order", "words"), CASES)
def test_decode_table(type_, value, order, words):
    assert decode_registers(words, type_, order) == value


@pytest.mark.parametrize(("type_", "value", "order", "words"), CASES)
def test_encode_table(type_, value, order, words):
    assert encode_registers(value, type_, order) == words


@pytest.mark.parametrize(("type_", "value", "order", "words"), CASES)
def test_fast_decoder_matches(type_, value, order, words):
    assert make_decoder(type_, order)(words) == value


@pytest.mark.parametrize("type_", ["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"])
def test_pymodbus_agrees_on_abcd_and_cdab(type_):
    """pymodbus' own converter is a second implementation for the two word orders it supports."""
    data_type = getattr(AsyncModbusTcpClient.DATATYPE, type_.upper())
    value = {"float32": -1.25, "float64": 1e100}.get(type_, 123 if type_.startswith("u") else -123)
    for order, word_order in (("ABCD", "big"), ("CDAB", "little")):
        words = encode_registers(value, type_, order)
        assert AsyncModbusTcpClient.convert_from_registers(words, data_type, word_order=word_order) == value


def test_two_float32_cdab():
    words = [0x0000, 0x3FC0, 0x0000, 0x4040]
    values = [decode_registers(words[i : i + 2], "float32", "CDAB") for i in (0, 2)]
    assert values == [1.5, 3.0]


def test_float32_badc_minus_1_11():
    expected = struct.unpack(">f", struct.pack(">f", -1.11))[0]
    assert decode_registers([0x8EBF, 0x7B14], "float32", "BADC") == expected
    assert abs(expected - -1.11) < 1e-6


def test_cdab_block_decodes_per_value():
    """Three CDAB float32 in one request decode value by value, not as one reversed list."""
    tags = [
        ModbusTag(name=name, table="holding_register", address=2 * i, type="float32", order="CDAB")
        for i, name in enumerate(["a", "b", "c"])
    ]
    (request,) = plan_requests(tags)
    words = encode_registers(1.5, "float32", "CDAB") + encode_registers(3.0, "float32", "CDAB") + encode_registers(-0.5, "float32", "CDAB")
    assert words == [0x0000, 0x3FC0, 0x0000, 0x4040, 0x0000, 0xBF00]
    samples, errors = request.decode("d", words, 0, 0)
    assert errors == 0
    assert [(s.tag, s.value) for s in samples] == [("a", 1.5), ("b", 3.0), ("c", -0.5)]


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_string_round_trip(order):
    words = encode_registers("LINE-7", "string", order, length=4)
    assert len(words) == 4
    assert decode_registers(words, "string", order, length=4) == "LINE-7"


def test_string_byte_order():
    assert encode_registers("AB", "string", "ABCD", length=1) == [0x4142]
    assert encode_registers("AB", "string", "BADC", length=1) == [0x4241]
    assert decode_registers([0x4142, 0x4300], "string", "CDAB", length=2) == "ABC"


@pytest.mark.parametrize(("order", "word"), [("ABCD", 0x0020), ("CDAB", 0x0020), ("BADC", 0x2000), ("DCBA", 0x2000)])
def test_bool_bit(order, word):
    assert decode_registers([word], "bool", order, bit=5) is True
    assert decode_registers([word], "bool", order, bit=4) is False
    assert encode_registers(True, "bool", order, bit=5) == [word]


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="ABDC"):
        decode_registers([0, 0], "float32", "ABDC")
    with pytest.raises(ValueError, match="takes 2 registers, got 1"):
        decode_registers([0], "float32", "ABCD")
    with pytest.raises(ValueError, match="70000"):
        decode_registers([70000], "uint16", "ABCD")
    with pytest.raises(ValueError, match="does not fit in int16"):
        encode_registers(40000, "int16", "ABCD")
    with pytest.raises(ValueError, match="raise `length`"):
        encode_registers("too long", "string", "ABCD", length=2)
    with pytest.raises(ValueError, match="length"):
        register_count("string")


def test_plc_time_wrong_word_order_is_bad():
    """A uint64 PLC clock sent low word first (CDAB) but mapped as ABCD decodes to no plausible instant."""
    clock_ms = 1_659_000_029_184  # 2022-07-28, low word 0x8000
    words = encode_registers(clock_ms, "uint64", "CDAB")
    tags = [
        ModbusTag(name="clock", table="holding_register", address=0, type="uint64", order="ABCD", role="clock"),
        ModbusTag(name="since", table="holding_register", address=4, type="uint64", order="CDAB"),
        ModbusTag(name="count", table="holding_register", address=8, type="uint64", order="ABCD"),
    ]
    (request,) = plan_requests(tags, time_tags=frozenset({"since"}))
    samples, errors = request.decode("d", words + words + words, 0, 0)
    clock, since, count = samples
    wrong = decode_registers(words, "uint64", "ABCD")
    assert wrong > 2**63  # larger than SQLite's INTEGER can hold
    assert errors == 0
    assert (clock.status, clock.value, clock.raw) == ("bad", None, words)
    assert clock.detail.startswith(f"implausible_time: value {wrong} ms is not a time between 2000-01-01 and 2100-01-01 UTC")
    assert "check the tag's byte/word order" in clock.detail
    # Named as a time only in the tag map's time section, in the right order: a good sample.
    assert (since.status, since.value) == ("good", clock_ms)
    # Not a time at all: the same huge number is a plain value.
    assert (count.status, count.value) == ("good", wrong)


@pytest.mark.parametrize(
    ("value", "plausible"),
    [(946_684_800_000, True), (946_684_799_999, False), (4_102_444_799_999, True), (4_102_444_800_000, False),
     (1.6e12, True), (float("nan"), False), (True, False), ("2022-07-28", False), (0, False)],
)
def test_implausible_time_bounds(value, plausible):
    assert (implausible_time(value) is None) is plausible
