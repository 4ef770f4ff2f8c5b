"""Re-computation details read as causes, vouchers grouped per anchor, gateway and cause, and each group's line in both languages."""

from __future__ import annotations

import pytest

from tests.factories import make_claims
from valuegate.cloud.web.recomputation import Cause, group_text, group_vouchers, parse_detail, voucher_runs
from valuegate.edge.protocol import voucher as v

CLAIMS = make_claims(seq=1, prev=None)
STORED_BASELINE = v.Baseline(value=27.396048, days=10, first_date="2022-07-22", last_date="2022-09-20", digest="sha256:" + "ab" * 32)
# Details in the forms the reproduction writes, with the protocol structs' own reprs.
BASELINE_DIFFERS = f"baseline {STORED_BASELINE} != claimed {CLAIMS.baseline}; delta {CLAIMS.delta} != claimed {CLAIMS.delta}"
REPORTING_DIFFERS = f"reporting {CLAIMS.reporting} != claimed {CLAIMS.reporting}; sufficiency {CLAIMS.sufficiency} != claimed {CLAIMS.sufficiency}"
OWNED = "machine 'filler-01' is measured by gateway 'gw-a', not by this voucher's gateway 'gw-b', so the stored records are not the ones it commits to"
WAITING_BASELINE = (
    "waiting for baseline records: the baseline rebuilt from the stored records of 2022-07-22..2022-09-20 is 27.396048 over 10 days,"
    " the voucher claims 26.011391 over 10"
)
OWNED_TWO = (
    "machine 'capper-01' is measured by gateway 'gw-c', machine 'filler-01' is measured by gateway 'gw-a', not by this voucher's gateway 'gw-b',"
    " so the stored records are not the ones it commits to"
)


@pytest.mark.parametrize(
    ("detail", "pending", "expected"),
    [
        (OWNED, False, Cause("machine_owned", (("owned", (("filler-01", "gw-a"),)),))),
        (OWNED_TWO, False, Cause("machine_owned", (("owned", (("capper-01", "gw-c"), ("filler-01", "gw-a"))),))),
        ("waiting for records: 0 of 3 stored", True, Cause("records_waiting")),
        (WAITING_BASELINE, True, Cause("baseline_records_waiting")),
        ("evidence digest matches; contract 'C-1' with anchor 'line-oee' is not uploaded yet", True,
         Cause("contract_missing", (("contract", "C-1"), ("anchor", "line-oee")))),
        ("evidence digest of the 30 stored records is sha256:aa, the voucher claims sha256:bb over 3", False, Cause("evidence_differs")),
        (BASELINE_DIFFERS, False, Cause("baseline_differs")),
        (f"baseline {STORED_BASELINE} != claimed {CLAIMS.baseline}", False, Cause("baseline_differs")),
        (REPORTING_DIFFERS, False, Cause("numbers_differ", (("parts", ("reporting", "sufficiency")),))),
        (f"delta.point 1.25 != claimed {CLAIMS.delta.point}", False, Cause("numbers_differ", (("parts", ("delta.point",)),))),
        (f"{REPORTING_DIFFERS}; baseline {STORED_BASELINE} != claimed {CLAIMS.baseline}", False,
         Cause("numbers_differ", (("parts", ("reporting", "sufficiency", "baseline")),))),
        ("cannot recompute the day: plant date 2024-02-30 is not a date", False, Cause("recompute_failed", (("error", "plant date 2024-02-30 is not a date"),))),
        ("recomputation failed: 'm-1'", False, Cause("recompute_failed", (("error", "'m-1'"),))),
        ("oee 0.70 differs from 0.735", False, Cause("other_mismatch")),
        ("something new", True, Cause("other_pending")),
        # A waiting detail on a voucher that got a verdict is not a pending cause.
        ("waiting for records: 0 of 3 stored", False, Cause("other_mismatch")),
    ],
)
def test_detail_cause(detail: str, pending: bool, expected: Cause) -> None:
    assert parse_detail(detail, pending=pending) == expected


def test_voucher_runs_join_consecutive_sequences() -> None:
    assert voucher_runs("gw-b", [5, 1, 2, 3, 7, 8, 3]) == ["gw-b:1–3", "gw-b:5", "gw-b:7–8"]
    assert voucher_runs("gw-b", [9]) == ["gw-b:9"]
    assert voucher_runs("gw-b", []) == []


def rows(gateway: str, seqs, detail: str, *, anchor: str = "line-oee", reproduced: bool | None = False) -> list[dict]:
    return [{"anchor_id": anchor, "gateway_id": gateway, "seq": seq, "reproduced": reproduced, "reproduce_detail": detail} for seq in seqs]


def test_groups_one_per_anchor_gateway_and_cause() -> None:
    vouchers = (
        rows("gw-b", range(1, 144), OWNED)
        + rows("gw-a", [4, 5, 6], BASELINE_DIFFERS)
        + rows("gw-a", [1, 2], "waiting for records: 1 of 3 stored", reproduced=None)
        + rows("gw-a", [3], "waiting for records: 0 of 3 stored", reproduced=None)
        + rows("gw-a", [9], BASELINE_DIFFERS, anchor="line-availability")
    )
    groups = group_vouchers(vouchers)
    summary = [(g.anchor, g.gateway, g.cause.code, g.seqs, len(g.details), g.distinct_details) for g in groups]
    assert summary == [
        ("line-availability", "gw-a", "baseline_differs", [9], 1, 1),
        ("line-oee", "gw-a", "baseline_differs", [4, 5, 6], 1, 1),
        ("line-oee", "gw-a", "records_waiting", [1, 2, 3], 2, 2),
        ("line-oee", "gw-b", "machine_owned", list(range(1, 144)), 1, 1),
    ]
    assert groups[2].details == ["waiting for records: 1 of 3 stored", "waiting for records: 0 of 3 stored"]


def test_group_keeps_five_distinct_details() -> None:
    vouchers = [row for seq in range(1, 9) for row in rows("gw-a", [seq], f"oee 0.{seq} differs")]
    [group] = group_vouchers(vouchers)
    assert group.details == [f"oee 0.{seq} differs" for seq in range(1, 6)]
    assert group.distinct_details == 8


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("zh-CN",
         "网关 gw-b 的 143 张凭证（gw-b:1–143）：复算时，设备 filler-01 的遥测由网关 gw-a 上报，而不是网关 gw-b，因此存储的遥测无法复算网关 gw-b 签发的内容；"
         "处于这种状态的凭证不计价。如果两个网关测量的是不同的设备，请在其中一个网关的标签映射中修改设备编号；如果网关 gw-b 取代了网关 gw-a，"
         "请运行 valuegate cloud admin machine-move acme filler-01 gw-b --from 开始时间，其中“开始时间”为网关 gw-b 开始测量的时刻"
         "（带时区，例如 2026-01-01T08:00:00+08:00），云端随后会重新复算这些凭证。"),
        ("en",
         "Gateway gw-b, 143 vouchers (gw-b:1–143): when re-computed, machine filler-01 was measured by gateway gw-a, not by gateway gw-b, so the stored "
         "telemetry cannot reproduce what gateway gw-b signed; vouchers in this state bill nothing. If the gateways measure different machines, rename "
         "the machine in one gateway's tag map. If gateway gw-b replaced gateway gw-a, run valuegate cloud admin machine-move acme filler-01 gw-b "
         "--from START, where START is the instant gateway gw-b started measuring, with its offset (for example 2026-01-01T08:00:00+08:00); the cloud "
         "then re-computes these vouchers."),
    ],
)
def test_machine_owned_line(language: str, expected: str) -> None:
    [group] = group_vouchers(rows("gw-b", range(1, 144), OWNED))
    assert group_text(group, language, "acme") == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("zh-CN",
         "网关 gw-b 的 2 张凭证（gw-b:4、gw-b:9）：复算时，设备 capper-01 的遥测由网关 gw-c 上报和设备 filler-01 的遥测由网关 gw-a 上报，而不是网关 gw-b，"
         "因此存储的遥测无法复算网关 gw-b 签发的内容；处于这种状态的凭证不计价。如果两个网关测量的是不同的设备，请在其中一个网关的标签映射中修改设备编号；"
         "如果网关 gw-b 取代了网关 gw-c 和 gw-a，请运行 valuegate cloud admin machine-move acme capper-01 gw-b --from 开始时间 和 "
         "valuegate cloud admin machine-move acme filler-01 gw-b --from 开始时间，其中“开始时间”为网关 gw-b 开始测量的时刻"
         "（带时区，例如 2026-01-01T08:00:00+08:00），云端随后会重新复算这些凭证。"),
        ("en",
         "Gateway gw-b, 2 vouchers (gw-b:4, gw-b:9): when re-computed, machine capper-01 was measured by gateway gw-c and machine filler-01 was measured "
         "by gateway gw-a, not by gateway gw-b, so the stored telemetry cannot reproduce what gateway gw-b signed; vouchers in this state bill nothing. "
         "If the gateways measure different machines, rename the machine in one gateway's tag map. If gateway gw-b replaced gateway gw-c and gw-a, "
         "run valuegate cloud admin machine-move acme capper-01 gw-b --from START and valuegate cloud admin machine-move acme filler-01 gw-b --from "
         "START, where START is the instant gateway gw-b started measuring, with its offset (for example 2026-01-01T08:00:00+08:00); the cloud then "
         "re-computes these vouchers."),
    ],
)
def test_two_owned_machines_line(language: str, expected: str) -> None:
    [group] = group_vouchers(rows("gw-b", [4, 9], OWNED_TWO))
    assert group_text(group, language, "acme") == expected


@pytest.mark.parametrize(
    ("detail", "seqs", "language", "expected"),
    [
        (BASELINE_DIFFERS, range(1, 144), "zh-CN",
         "网关 gw-beta 的 143 张凭证（gw-beta:1–143）：云端用已存储的基线期遥测重建的基线与签发的基线不同；处于这种状态的凭证不计价。"
         "常见原因是基线期的部分分钟记录没有送达云端。请工程师将云端存储的基线期分钟数与网关 gw-beta 本地的记录对比。"),
        (BASELINE_DIFFERS, range(1, 144), "en",
         "Gateway gw-beta, 143 vouchers (gw-beta:1–143): the baseline rebuilt from the baseline-period telemetry stored in the cloud differs from the "
         "signed baseline; vouchers in this state bill nothing. Usually some baseline-period minute records never reached the cloud. Have an engineer "
         "compare the baseline-period minutes stored in the cloud with the records of gateway gw-beta."),
        (REPORTING_DIFFERS, [1, 3, 5, 7, 9, 11], "zh-CN",
         "网关 gw-beta 的 6 张凭证（gw-beta:1、gw-beta:3、gw-beta:5、gw-beta:7…）：用存储的遥测复算时，报告期数值和数据充分性判定与签发的不同；"
         "处于这种状态的凭证不计价。请确认网关与云端运行相同版本的 valuegate，并使用同一合同版本。"),
        (REPORTING_DIFFERS, [1, 3, 5, 7, 9, 11], "en",
         "Gateway gw-beta, 6 vouchers (gw-beta:1, gw-beta:3, gw-beta:5, gw-beta:7…): re-computation from the stored telemetry finds a difference in the "
         "reporting-period values and data-sufficiency verdict; vouchers in this state bill nothing. Check that the gateway and the cloud run the same "
         "valuegate version and use the same contract revision."),
        ("evidence digest of the 30 stored records is sha256:aa, the voucher claims sha256:bb over 3", [2], "zh-CN",
         "网关 gw-beta 的凭证 gw-beta:2：云端存储的分钟记录与网关签发时的记录不同（证据摘要不一致）；处于这种状态的凭证不计价。"
         "请工程师将网关 gw-beta 本地保存的这些日期的记录与云端存储的遥测逐条对比。"),
        ("evidence digest of the 30 stored records is sha256:aa, the voucher claims sha256:bb over 3", [2], "en",
         "Gateway gw-beta, voucher gw-beta:2: the minute records stored in the cloud differ from those the gateway signed (the evidence digests differ); "
         "vouchers in this state bill nothing. Have an engineer compare, record by record, what gateway gw-beta keeps for these days with the telemetry "
         "stored in the cloud."),
        ("cannot recompute the day: plant date 2024-02-30 is not a date", [8], "zh-CN",
         "网关 gw-beta 的凭证 gw-beta:8：云端无法复算（错误：plant date 2024-02-30 is not a date）；处于这种状态的凭证不计价。请把凭证编号和该错误信息交给工程师排查。"),
        ("cannot recompute the day: plant date 2024-02-30 is not a date", [8], "en",
         "Gateway gw-beta, voucher gw-beta:8: the cloud could not re-compute (error: plant date 2024-02-30 is not a date); vouchers in this state bill "
         "nothing. Give the voucher ids and this error to an engineer."),
    ],
)
def test_disagreement_line(detail: str, seqs, language: str, expected: str) -> None:
    [group] = group_vouchers(rows("gw-beta", seqs, detail))
    assert group_text(group, language, "beta") == expected


@pytest.mark.parametrize(
    ("detail", "language", "expected"),
    [
        (WAITING_BASELINE, "zh-CN",
         "网关 gw-a 的 3 张凭证（gw-a:10–12）：尚未复算，因为基线期的分钟记录还没有全部到达云端。如果此提示一直存在，请检查网关 gw-a 是否在线并已连接 MQTT 消息服务器。"
         "复算之前，处于这种状态的凭证按已核验计价。"),
        (WAITING_BASELINE, "en",
         "Gateway gw-a, 3 vouchers (gw-a:10–12): not re-computed yet, because not all baseline-period minute records have reached the cloud. If this "
         "finding stays, check that gateway gw-a is online and connected to the MQTT broker. Until re-computed, vouchers in this state bill as verified."),
        ("evidence digest matches; contract 'C-1' with anchor 'line-oee' is not uploaded yet", "zh-CN",
         "网关 gw-a 的 3 张凭证（gw-a:10–12）：尚未复算，因为云端没有含价值锚点 line-oee 的合同 C-1（证据摘要一致）。"
         "请上传包含该锚点的合同：valuegate cloud admin contract-upload acme 合同文件。复算之前，处于这种状态的凭证按已核验计价。"),
        ("evidence digest matches; contract 'C-1' with anchor 'line-oee' is not uploaded yet", "en",
         "Gateway gw-a, 3 vouchers (gw-a:10–12): not re-computed yet, because the cloud has no contract C-1 with value anchor line-oee (the evidence "
         "digest matches). Upload the contract that contains this anchor: valuegate cloud admin contract-upload acme CONTRACT_FILE. Until re-computed, "
         "vouchers in this state bill as verified."),
        ("a detail no release writes yet", "zh-CN",
         "网关 gw-a 的 3 张凭证（gw-a:10–12）：尚未复算；复算之前，处于这种状态的凭证按已核验计价。复算详情：a detail no release writes yet"),
        ("a detail no release writes yet", "en",
         "Gateway gw-a, 3 vouchers (gw-a:10–12): not re-computed yet; until then, vouchers in this state bill as verified. Re-computation detail: "
         "a detail no release writes yet"),
    ],
)
def test_pending_line(detail: str, language: str, expected: str) -> None:
    [group] = group_vouchers(rows("gw-a", [10, 11, 12], detail, reproduced=None))
    assert group_text(group, language, "acme") == expected


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("zh-CN", "网关 gw-a 的 3 张凭证（gw-a:1–3）：云端按存储的遥测复算的结果与网关签发的不一致；处于这种状态的凭证不计价。复算详情：oee 0.70 differs"
                  "（凭证列表中另有 1 种详情）"),
        ("en", "Gateway gw-a, 3 vouchers (gw-a:1–3): the cloud's re-computation from stored telemetry disagrees with what the gateway signed; vouchers "
               "in this state bill nothing. Re-computation detail: oee 0.70 differs (other details in the voucher list: 1)"),
    ],
)
def test_unknown_details_shown_as_they_are(language: str, expected: str) -> None:
    [group] = group_vouchers(rows("gw-a", [1, 2], "oee 0.70 differs") + rows("gw-a", [3], "oee 0.71 differs"))
    assert group_text(group, language, "acme") == expected
