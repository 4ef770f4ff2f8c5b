"""SVG charts: the gain chart's dots, intervals, baseline band and target; the Pareto's order and cumulative line."""

from __future__ import annotations

import datetime as dt
import xml.etree.ElementTree as ET

from valuegate.cloud.web.charts import GainPoint, gain_chart, nice_ticks, pareto_chart

SVG = "{http://www.w3.org/2000/svg}"
GAIN_LABELS = {
    "title": "Daily gain", "baseline": "Baseline", "target": "Target", "interval": "95%", "insufficient": "too little data", "no_data": "No data",
    "day_tip": "{date}: {gain} ({interval} {low} – {high})", "day_tip_insufficient": "{date}: {gain} ({interval} {low} – {high}); {insufficient}",
}
PARETO_LABELS = {"title": "Pareto", "minutes": "min", "cumulative": "cumulative", "no_data": "No data", "tip": "{reason}: {minutes} {unit} ({cumulative} {share}%)"}


def parse(svg) -> ET.Element:
    return ET.fromstring(str(svg))


def test_nice_ticks_cover_range():
    assert nice_ticks(0, 10) == [0, 2.5, 5, 7.5, 10]
    assert nice_ticks(-1.2, 3.4) == [-2, 0, 2, 4]
    assert nice_ticks(0, 0.37) == [0, 0.1, 0.2, 0.3, 0.4]
    assert nice_ticks(5, 5) == [5, 5.25, 5.5, 5.75, 6]


def test_gain_chart_draws_each_day():
    points = [
        GainPoint(dt.date(2024, 5, 1), 1.5, 1.0, 2.0, True),
        GainPoint(dt.date(2024, 5, 2), 0.5, -0.5, 1.5, False),
        GainPoint(dt.date(2024, 5, 3), 2.5, 2.0, 3.0, True),
    ]
    root = parse(gain_chart(points, target=2.0, labels=GAIN_LABELS, format_day=dt.date.isoformat))
    days = root.findall(f"{SVG}g")
    assert [g.get("data-date") for g in days] == ["2024-05-01", "2024-05-02", "2024-05-03"]
    circles = [g.find(f"{SVG}circle") for g in days]
    assert [c.get("class") for c in circles] == ["point", "point insufficient", "point"]
    # Higher gains sit higher on the page (smaller y); each interval bar spans its dot.
    ys = [float(c.get("cy")) for c in circles]
    assert ys[2] < ys[0] < ys[1]
    for g, circle in zip(days, circles, strict=True):
        bar = g.find(f"{SVG}line")
        assert float(bar.get("y1")) <= float(circle.get("cy")) <= float(bar.get("y2"))
    assert "too little data" in days[1].find(f"{SVG}title").text
    target = root.find(f"{SVG}line[@class='target']")
    baseline = root.find(f"{SVG}line[@class='baseline']")
    assert float(target.get("y1")) < float(baseline.get("y1"))
    band = root.find(f"{SVG}rect[@class='baseline-band']")
    # The band is centred on the baseline line.
    centre = float(band.get("y")) + float(band.get("height")) / 2
    assert abs(centre - float(baseline.get("y1"))) < 0.2


def test_gain_chart_dates_in_page_language():
    from valuegate.cloud.web.i18n import format_date

    points = [GainPoint(dt.date(2022, 9, 22), 66.96, 32.07, 98.76, True), GainPoint(dt.date(2023, 2, 10), -48.2, -78.31, -20.77, True)]
    root = parse(gain_chart(points, target=15.0, labels=GAIN_LABELS, format_day=lambda day: format_date(day, "zh-CN")))
    axis = [node.text for node in root.findall(f"{SVG}text[@class='tick']") if "年" in (node.text or "")]
    assert axis == ["2022年9月22日", "2023年2月10日"]
    tips = [g.find(f"{SVG}title").text for g in root.findall(f"{SVG}g")]
    assert tips[0].startswith("2022年9月22日")
    assert tips[1].startswith("2023年2月10日")
    # The data attribute stays an ISO date, for scripts and tests.
    assert [g.get("data-date") for g in root.findall(f"{SVG}g")] == ["2022-09-22", "2023-02-10"]


def test_gain_chart_escapes_labels():
    svg = str(gain_chart([], target=None, labels={**GAIN_LABELS, "title": "<script>x</script>", "no_data": "暂无数据"}, format_day=dt.date.isoformat))
    assert "<script>" not in svg
    assert "暂无数据" in svg
    assert parse(svg).find(f"{SVG}text").text == "暂无数据"


def test_pareto_orders_and_accumulates():
    root = parse(pareto_chart([("jam", 30.0), ("<starved>", 60.0), ("none", 0.0), ("fault", 10.0)], labels=PARETO_LABELS))
    groups = root.findall(f"{SVG}g")
    assert [g.get("data-reason") for g in groups] == ["<starved>", "jam", "fault"]
    heights = [float(g.find(f"{SVG}rect").get("height")) for g in groups]
    assert heights[0] > heights[1] > heights[2]
    assert heights[0] == 2 * heights[1]
    line = root.find(f"{SVG}polyline").get("points").split()
    shares_y = [float(p.split(",")[1]) for p in line]
    # 60%, 90%, 100% of the plot height above its bottom; the last point touches the top.
    assert shares_y[0] > shares_y[1] > shares_y[2]
    assert shares_y[2] == 18.0


def test_pareto_cuts_long_labels_with_an_ellipsis():
    chart = str(pareto_chart([("(no reason code)", 3.5), ("jam", 1.0)], labels={**PARETO_LABELS, "title": "t", "cumulative": "cum", "no_data": "-"}))
    ticks = [node.text for node in ET.fromstring(chart).iter() if node.get("class") == "tick" and node.get("text-anchor") == "middle"]
    assert ticks == ["(no reason co…", "jam"]
    # The tooltip keeps the whole label.
    assert "(no reason code): 3.50 min" in chart
