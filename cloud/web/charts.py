"""Server-side SVG charts: an anchor's daily gain with its 95% intervals, and the downtime Pareto.

The SVG is built from escaped strings, needs no script and loads nothing
from any host, so that pages, PDFs and renewal packages show the same chart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from xml.sax.saxutils import escape, quoteattr

import markupsafe

__all__ = ("GainPoint", "UNBILLED", "gain_chart", "pareto_chart", "nice_ticks")

_WIDTH, _HEIGHT = 680, 260

# Presentation attributes make the SVG look right where no stylesheet reaches it (WeasyPrint's
# SVG renderer, a saved file); a page's CSS still overrides them.
_STYLE = {
    "plot": 'fill="#fbfcfd" stroke="#c5ccd3"',
    "grid": 'stroke="#e3e7eb"',
    "text": 'fill="#4a5560" font-size="11" font-family="Noto Sans CJK SC, DejaVu Sans, sans-serif"',
    "band": 'fill="#d9dee3" fill-opacity="0.7"',
    "baseline": 'stroke="#6b7680"',
    "target": 'stroke="#1a7f37" stroke-dasharray="6 4"',
    "interval": 'stroke="#2f6fb3"',
    "point": 'fill="#2f6fb3"',
    "hollow": 'fill="#ffffff" stroke="#2f6fb3"',
    "unbilled": 'fill="#ffffff" stroke="#b3261e" stroke-width="1.5"',
    "bar": 'fill="#c4622d"',
    "cumulative": 'fill="none" stroke="#1d2329" stroke-width="1.5"',
}
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 20, 18, 34


@dataclass(frozen=True, slots=True)
class GainPoint:
    """One voucher of an anchor: its day, the gain, its 95% interval, whether the day had enough data, and its billing state."""

    plant_date: dt.date
    point: float
    low: float
    high: float
    sufficient: bool
    state: str = "billable"
    """``billable``, or one of :data:`UNBILLED` for a voucher that does not bill whatever its data."""


# Vouchers that bill nothing whatever their gain, each drawn as its own hollow shape in red, so that it reads apart
# from a billable day (a filled dot) and from a day with too little data (a hollow dot). Path offsets are for a 4.5 px marker.
UNBILLED = {
    "gap": "m0,-4.5 l4.5,4.5 l-4.5,4.5 l-4.5,-4.5 z",
    "rejected": "m-4,-4 h8 v8 h-8 z",
    "mismatch": "m0,-4.5 l4.5,8 h-9 z",
    "excluded": "m-4,-4 l8,8 m0,-8 l-8,8",
}


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Return round tick values covering ``low..high`` (steps of 1, 2 or 5 times a power of ten)."""
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(count - 1, 1)
    magnitude = 10 ** _floor_log10(raw)
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = _floor_div(low, step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 10))
        value += step
    if ticks[-1] < high:
        ticks.append(round(value, 10))
    return ticks


def _floor_log10(value: float) -> int:
    return Decimal(repr(value)).adjusted()


def _floor_div(value: float, step: float) -> int:
    quotient = value / step
    whole = int(quotient)
    return whole - 1 if quotient < whole else whole


def _shorten(name: str, limit: int) -> str:
    """Return ``name`` cut to ``limit`` characters with an ellipsis, so that a cut label does not read as a whole word. The tooltip keeps it whole."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _label(value: float) -> str:
    text = f"{value:,.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _svg(title: str, body: list[str], *, height: int = _HEIGHT) -> markupsafe.Markup:
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {_WIDTH} {height}" width="{_WIDTH}" height="{height}"'
        f' role="img" aria-label={quoteattr(title)}><title>{escape(title)}</title>'
    )
    return markupsafe.Markup(head + "".join(body) + "</svg>")


def gain_chart(points: Sequence[GainPoint], *, target: float | None, labels: dict[str, str], format_day: Callable[[dt.date], str]) -> markupsafe.Markup:
    """Draw daily gains as dots with 95% interval bars, the baseline band at zero and the target line.

    ``labels`` contains the translated ``title``, ``baseline``, ``target``,
    ``interval``, ``insufficient`` and ``no_data`` strings, and the tooltip
    templates ``day_tip`` and ``day_tip_insufficient`` with the fields
    ``date``, ``gain``, ``interval``, ``low``, ``high`` and ``insufficient``.
    A voucher in one of the :data:`UNBILLED` states is drawn as that state's
    shape, and its tooltip is ``labels["state_tip"]`` with the fields
    ``tip`` and ``state`` (the label ``legend.<state>``). When ``labels``
    contains ``legend_billable``, a legend under the axis names each kind
    of marker the chart draws, as long as it draws more than billable days.
    ``format_day`` writes the dates of the tooltips and the axis in the page language.
    """
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    if not points:
        return _svg(labels["title"], [f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle" class="empty" {_STYLE["text"]}>{escape(labels["no_data"])}</text>'])

    points = sorted(points, key=lambda p: p.plant_date)
    first, last = points[0].plant_date, points[-1].plant_date
    span = max((last - first).days, 1)
    half_width = sum((p.high - p.low) / 2 for p in points) / len(points)
    values = [0.0, half_width, -half_width, *(p.low for p in points), *(p.high for p in points)]
    if target is not None:
        values.append(target)
    ticks = nice_ticks(min(values), max(values))
    y_low, y_high = ticks[0], ticks[-1]

    def x(day: dt.date) -> float:
        return _LEFT + plot_w * ((day - first).days / span if len(points) > 1 else 0.5)

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - (value - y_low) / (y_high - y_low))

    body = [f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" {_STYLE["plot"]}/>']
    for tick in ticks:
        body.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" {_STYLE["grid"]}/>')
        body.append(f'<text class="tick" {_STYLE["text"]} x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_label(tick)}</text>')

    # Baseline: zero gain, widened by the mean half-width of the daily intervals.
    band_top, band_bottom = y(half_width), y(-half_width)
    body.append(f'<rect class="baseline-band" x="{_LEFT}" y="{band_top:.1f}" width="{plot_w}" height="{max(band_bottom - band_top, 1):.1f}" {_STYLE["band"]}/>')
    body.append(f'<line class="baseline" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}" {_STYLE["baseline"]}/>')
    body.append(f'<text class="legend" {_STYLE["text"]} x="{_LEFT + 4}" y="{y(0) - 4:.1f}">{escape(labels["baseline"])}</text>')
    if target is not None:
        body.append(f'<line class="target" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(target):.1f}" y2="{y(target):.1f}" {_STYLE["target"]}/>')
        body.append(f'<text class="legend" {_STYLE["text"]} x="{_LEFT + plot_w - 4}" y="{y(target) - 4:.1f}" text-anchor="end">{escape(labels["target"])} {_label(target)}</text>')

    kinds: set[str] = set()
    for p in points:
        cx, cy = x(p.plant_date), y(p.point)
        template = labels["day_tip"] if p.sufficient else labels["day_tip_insufficient"]
        tip = template.format(
            date=format_day(p.plant_date), gain=_label(p.point), interval=labels["interval"], low=_label(p.low), high=_label(p.high),
            insufficient=labels["insufficient"],
        )
        if p.state in UNBILLED:
            tip = labels["state_tip"].format(tip=tip, state=labels[f"legend.{p.state}"])
        kind = _marker_kind(p)
        kinds.add(kind)
        body.append(
            f'<g class="day" data-date="{p.plant_date.isoformat()}"><title>{escape(tip)}</title>'
            f'<line class="interval" x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(p.high):.1f}" y2="{y(p.low):.1f}" {_STYLE["interval"]}/>'
            f"{_marker(kind, cx, cy)}</g>"
        )

    axis_y = _TOP + plot_h + 16
    body.append(f'<text class="tick" {_STYLE["text"]} x="{_LEFT}" y="{axis_y}">{escape(format_day(first))}</text>')
    if last != first:
        body.append(f'<text class="tick" {_STYLE["text"]} x="{_LEFT + plot_w}" y="{axis_y}" text-anchor="end">{escape(format_day(last))}</text>')
    if "legend_billable" not in labels or kinds <= {"billable"}:
        return _svg(labels["title"], body)
    legend, rows = _legend(kinds, labels, _HEIGHT)
    body.append(legend)
    return _svg(labels["title"], body, height=_HEIGHT + rows * _LEGEND_ROW + 4)


_LEGEND_ROW = 18
# Legend order: billable first, then the kinds that bill nothing.
_KINDS = ("billable", "insufficient", *UNBILLED)


def _marker_kind(point: GainPoint) -> str:
    """Return the marker of a voucher: its unbilled state first, because the voucher bills nothing in that state whatever its data."""
    if point.state in UNBILLED:
        return point.state
    return "billable" if point.sufficient else "insufficient"


def _marker(kind: str, cx: float, cy: float, *, css: str | None = None) -> str:
    """Return the marker of ``kind`` centred on ``cx, cy``; ``css`` replaces its class, as a legend sample needs."""
    if kind == "billable":
        return f'<circle class="{css or "point"}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" {_STYLE["point"]}/>'
    if kind == "insufficient":
        return f'<circle class="{css or "point insufficient"}" cx="{cx:.1f}" cy="{cy:.1f}" r="3.5" {_STYLE["hollow"]}/>'
    # Not class "point": the page's stylesheet fills every ".point", and these markers must stay hollow.
    return f'<path class="{css or "unbilled " + kind}" d="M{cx:.1f},{cy:.1f} {UNBILLED[kind]}" {_STYLE["unbilled"]}/>'


def _legend(kinds: set[str], labels: dict[str, str], top: float) -> tuple[str, int]:
    """Return marker samples with their labels for the marker kinds the chart draws, in rows from ``top``, and the number of rows."""
    entries = []
    left, row = float(_LEFT), 0
    for kind in (k for k in _KINDS if k in kinds):
        if kind == "billable":
            text = labels["legend_billable"]
        elif kind == "insufficient":
            text = labels["insufficient"]
        else:
            text = labels[f"legend.{kind}"]
        # An estimate of the label's width at 11 px: CJK characters are about twice as wide as Latin ones.
        width = 28 + sum(11 if ord(char) > 0x2E80 else 6 for char in text)
        if left > _LEFT and left + width > _WIDTH - _RIGHT:
            left, row = float(_LEFT), row + 1
        y = top + row * _LEGEND_ROW
        sample = _marker(kind, left + 5, y + 8, css="legend-marker")
        entries.append(
            f'<g class="legend-entry" data-kind="{kind}">{sample}'
            f'<text class="legend" {_STYLE["text"]} x="{left + 14:.1f}" y="{y + 12:.1f}">{escape(text)}</text></g>'
        )
        left += width
    return f'<g class="legend-row">{"".join(entries)}</g>', row + 1


def pareto_chart(reasons: Sequence[tuple[str, float]], *, labels: dict[str, str]) -> markupsafe.Markup:
    """Draw downtime minutes per reason as bars, largest first, with the cumulative share as a line.

    ``labels`` contains the translated ``title``, ``minutes``, ``cumulative`` and ``no_data`` strings,
    and the tooltip template ``tip`` with the fields ``reason``, ``minutes``, ``unit``, ``cumulative`` and ``share``.
    """
    reasons = sorted(((name, minutes) for name, minutes in reasons if minutes > 0), key=lambda item: (-item[1], item[0]))
    if not reasons:
        return _svg(labels["title"], [f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle" class="empty" {_STYLE["text"]}>{escape(labels["no_data"])}</text>'])

    plot_w, plot_h = _WIDTH - _LEFT - 48, _HEIGHT - _TOP - _BOTTOM - 10
    total = sum(minutes for _, minutes in reasons)
    ticks = nice_ticks(0.0, reasons[0][1])
    top = ticks[-1]
    slot = plot_w / len(reasons)
    bar = slot * 0.7

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - value / top)

    body = [f'<rect class="plot" x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" {_STYLE["plot"]}/>']
    for tick in ticks:
        body.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" {_STYLE["grid"]}/>')
        body.append(f'<text class="tick" {_STYLE["text"]} x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{_label(tick)}</text>')
    for share in (0, 50, 100):
        level = _TOP + plot_h * (1 - share / 100)
        body.append(f'<text class="tick" {_STYLE["text"]} x="{_LEFT + plot_w + 6}" y="{level + 4:.1f}">{share}%</text>')

    cumulative = 0.0
    line_points = []
    for index, (name, minutes) in enumerate(reasons):
        cumulative += minutes
        left = _LEFT + index * slot + (slot - bar) / 2
        center = left + bar / 2
        share = 100 * cumulative / total
        # Always two places, so that the labels of one chart read alike: 605.90 next to 649.17, not 605.9.
        tip = labels["tip"].format(reason=name, minutes=f"{minutes:,.2f}", unit=labels["minutes"], cumulative=labels["cumulative"], share=f"{share:.0f}")
        body.append(
            f'<g class="reason" data-reason={quoteattr(name)}><title>{escape(tip)}</title>'
            f'<rect class="bar" x="{left:.1f}" y="{y(minutes):.1f}" width="{bar:.1f}" height="{_TOP + plot_h - y(minutes):.1f}" {_STYLE["bar"]}/></g>'
        )
        body.append(f'<text class="tick" {_STYLE["text"]} x="{center:.1f}" y="{_TOP + plot_h + 14}" text-anchor="middle">{escape(_shorten(name, 14))}</text>')
        line_points.append(f"{center:.1f},{_TOP + plot_h * (1 - share / 100):.1f}")
    body.append(f'<polyline class="cumulative" points="{" ".join(line_points)}" {_STYLE["cumulative"]}/>')
    return _svg(labels["title"], body)
