"""The downtime Pareto: minutes per reason code from stored telemetry, and the stops that carry no reason code."""

from __future__ import annotations

import datetime as dt

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.factories import minute_records
from tests.settlement.seed import connect, ingest_telemetry, seed
from tests.verify.bundles import oee_contract
from valuegate.cloud.web.contract_views import _pareto_bars, _pareto_labels
from valuegate.cloud.web.charts import pareto_chart
from valuegate.cloud.web.queries import Downtime, downtime_by_reason

pytestmark = pytest.mark.postgres

DAY = dt.date(2024, 5, 7)


async def test_stops_without_code_counted_apart(database) -> None:
    await seed(database, oee_contract(), Ed25519PrivateKey.generate())
    start = dt.datetime.combine(DAY, dt.time(8), tzinfo=dt.UTC)
    coded = minute_records("m-1", start, 30, running_ms=50_000, stop_ms=10_000)
    # Ten minutes with 20 s of unplanned stop each, from a PLC that gives no reason code.
    uncoded = [msgspec.structs.replace(r, reasons={}) for r in minute_records("m-1", start + dt.timedelta(minutes=30), 10, running_ms=40_000, stop_ms=20_000)]
    await ingest_telemetry(database, coded + uncoded)

    async with await connect(database) as conn:
        downtime = await downtime_by_reason(conn, "acme", ["m-1"], DAY, DAY)

    assert downtime.by_reason == {"jam": 5.0}
    assert downtime.unassigned == pytest.approx(200_000 / 60_000)
    assert downtime.planned_busy == pytest.approx((30 * 60_000 + 10 * 60_000) / 60_000)


@pytest.mark.parametrize(("language", "label"), [("zh-CN", "（无原因代码）"), ("en", "(no reason code)")])
def test_uncoded_stops_get_a_bar(language: str, label: str) -> None:
    bars = _pareto_bars(Downtime({"jam": 5.0}, 3.5, 40.0), language)
    assert bars == [("jam", 5.0), (label, 3.5)]
    chart = str(pareto_chart(bars, labels=_pareto_labels(language, "t")))
    assert label in chart
    only_uncoded = str(pareto_chart(_pareto_bars(Downtime({}, 3.5, 40.0), language), labels=_pareto_labels(language, "t")))
    assert label in only_uncoded
    assert "class=\"empty\"" not in only_uncoded
