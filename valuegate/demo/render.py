"""Render the demo report as a terminal summary and as a standalone HTML page (zh-CN or English)."""

from __future__ import annotations

import datetime as dt
import html
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table

from valuegate.cloud.web.i18n import format_date, format_money, format_number

__all__ = ("print_report", "report_html")

_TEXT: dict[str, dict[str, Any]] = {
    "zh-CN": {
        "title": "valuegate 演示：已核验的价值报告",
        "machine": "设备",
        "date": "日期",
        "planned": "计划生产时间（分钟）",
        "run": "实际运行时间（分钟）",
        "downtime": "非计划停机时间（分钟）",
        "idle": "空闲（分钟）",
        "changeover": "换型与调试（分钟）",
        "availability": "可用率",
        "published": "记录自带数据",
        "difference": "差异",
        "vouchers": "凭证",
        "issued": "已签发",
        "stored": "已存储",
        "verified": "已核验",
        "reproduced": "已复算一致",
        "rejected": "已拒收",
        "value": "已实现价值",
        "contract": "合同",
        "anchor": "价值锚点",
        "quantity": "数量",
        "running_days": "运行天数",
        "amount": "金额",
        "total": "合计",
        "findings": "数据质量提示",
        "invoices": "发票",
        "packages": "续约准备包",
        "pause": "暂停",
        "efficiency": "效率",
        "auto_time": "自动运行时间增量",
        "total_time": "通电时间增量",
        "points": "点",
        "minutes": "分钟",
        "generated": "生成时间",
        "html_report": "HTML 报告",
        "status_approved": "已审批",
        "status_draft": "草稿",
        "trigger_days_before_end": "合同到期前 {days} 天（{end}到期）",
        "trigger_target_met": "价值锚点“{anchor}”已达成目标",
        "trigger_value_over": "累计已实现价值超过 {amount}",
        "kind": {
            "event_clipped": "停机事件超出生产时段，已截断",
            "event_outside_window": "停机事件在生产时段之外，未回放",
            "events_overlap": "停机事件相互重叠，合并回放",
            "events_without_summary_day": "停机事件所在日期没有日汇总",
            "hourly_without_summary_day": "小时产量所在日期没有日汇总",
            "hourly_breakdown_duplicate": "小时明细中有重复行",
            "published_hours_inconsistent": "日汇总中的监测时间不等于运行加暂停",
            "pause_without_events": "日汇总有暂停时间但没有停机事件",
            "pause_differs_from_events": "停机事件合计与日汇总暂停时间不一致",
            "units_differ_from_hourly": "小时产量合计与日产量不一致",
            "containers_without_running_time": "该小时有产量但没有运行时间",
            "containers_rate_implausible": "该小时产量相对运行时间不合理",
            "counter_decreased": "控制器计数器回落",
            "counter_rose_while_unavailable": "设备无数据期间控制器计数器仍在增长",
            "part_count_constant": "零件计数始终不变",
            "part_count_differs_from_completed": "零件计数与完成程序次数不一致",
            "computed_differs_from_replay": "计算的停机时间与回放的停机事件不一致",
            "auto_time_disagrees": "计算的运行时间与控制器 auto_time 增量相差超过 1%",
            "total_time_disagrees": "计算的计划生产时间与控制器 total_time 增量相差超过 1%",
        },
        "detail_note": "（每条说明的原文为英文）",
        # Chinese text takes full-width punctuation, and a count follows its label (已签发 146).
        "colon": "：",
        "comma": "，",
        "paren_open": "（",
        "paren_close": "）",
        "count": "{name} {count}",
        "intro": "以下数值由边缘代理从模拟 PLC 读取的数据计算，经签名凭证传至云端并验证后存储；旁列为录制数据本身公布的数字。",
    },
    "en": {
        "title": "valuegate demo: verified value report",
        "machine": "Machine",
        "date": "Date",
        "planned": "Planned busy (min)",
        "run": "Run (min)",
        "downtime": "Unplanned downtime (min)",
        "idle": "Idle (min)",
        "changeover": "Changeover (min)",
        "availability": "Availability",
        "published": "Recording's own figures",
        "difference": "Difference",
        "vouchers": "Vouchers",
        "issued": "issued",
        "stored": "stored",
        "verified": "verified",
        "reproduced": "reproduced",
        "rejected": "rejected",
        "value": "Realized value",
        "contract": "Contract",
        "anchor": "Value anchor",
        "quantity": "Quantity",
        "running_days": "Running days",
        "amount": "Amount",
        "total": "Total",
        "findings": "Data-quality findings",
        "invoices": "Invoices",
        "packages": "Renewal-prep packages",
        "pause": "pause",
        "efficiency": "efficiency",
        "auto_time": "auto_time increment",
        "total_time": "total_time increment",
        "points": "points",
        "minutes": "min",
        "generated": "Generated",
        "html_report": "HTML report",
        "status_approved": "approved",
        "status_draft": "draft",
        "trigger_days_before_end": "{days} days before the contract ends ({end})",
        "trigger_target_met": "value anchor {anchor} met its target",
        "trigger_value_over": "realized value over {amount}",
        "kind": {},
        "detail_note": "",
        "colon": ": ",
        "comma": ", ",
        "paren_open": " (",
        "paren_close": ")",
        "count": "{count} {name}",
        "intro": "The numbers below were computed by the edge agent from the simulated PLCs, carried to the cloud in signed vouchers and stored after verification; beside them are the figures the recording itself publishes.",
    },
}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _published_text(day: dict[str, Any], t: dict[str, Any]) -> str:
    published = day.get("published") or {}
    if "pause_min" in published:
        return f"{t['pause']} {published['pause_min']:.1f}{t['comma']}{t['efficiency']} {published['efficiency']:.3f}"
    if "auto_time_min" in published:
        return f"{t['auto_time']} {_fmt(published['auto_time_min'])}{t['comma']}{t['total_time']} {_fmt(published['total_time_min'])}"
    return ""


def _quantity(item: dict[str, Any], t: dict[str, Any]) -> str:
    """Return the billed quantity with every stored digit, as the amount is computed from it, and thousands separators."""
    if item["metric"] == "unplanned_downtime_rate":
        return f"{format_number(item['avoided_minutes'])} {t['minutes']}"
    return f"{format_number(item['points_gained'])} {t['points']}"


def _status(status: str, t: dict[str, Any]) -> str:
    return t.get(f"status_{status}", status)


def _money(amount: Any, currency: str, language: str) -> str:
    """Format an amount as the web pages do (``¥16,633.39``, ``CNY 16,633.39``)."""
    return format_money(str(amount), currency, language)


def _day(value: str | None, language: str) -> str:
    """Return an ISO plant date as the web pages write it (``2022年7月22日``, ``2022-07-22``), or "" when there is none."""
    return format_date(value, language) if value else ""


def _generated(report: dict[str, Any], language: str) -> str:
    """Return when the report was made: in Chinese as the web pages write an instant, in English as stored (UTC)."""
    stamp = report["generated_at"]
    if language == "en":
        return stamp
    return format_date(dt.datetime.fromisoformat(stamp), language)


def _trigger(package: dict[str, Any], t: dict[str, Any], titles: dict[str, str], language: str) -> str:
    template = t.get(f"trigger_{package.get('trigger_kind')}")
    detail = dict(package.get("detail") or {})
    if template is None:
        return package["trigger"]
    detail["anchor"] = titles.get(detail.get("anchor", ""), detail.get("anchor", ""))
    if "end" in detail:
        detail["end"] = _day(detail["end"], language)
    if "amount" in detail:
        detail["amount"] = _money(detail["amount"], detail.get("currency", ""), language)
    return template.format(**detail)


def _titles(report: dict[str, Any], language: str) -> dict[str, str]:
    return {item["anchor"]: item["title"].get(language) or item["anchor"] for item in report["value"]}


def _finding(finding: dict[str, Any], t: dict[str, Any]) -> str:
    label = t["kind"].get(finding["kind"], finding["kind"])
    return f"{label}{t['colon']}{finding['detail']}"


def _voucher_counts(report: dict[str, Any], t: dict[str, Any]) -> list[str]:
    """Return each voucher count with its label, in the order issued, verified, stored, reproduced, rejected."""
    counts = report["vouchers"]
    return [t["count"].format(name=t[key], count=counts[key]) for key in ("issued", "verified", "stored", "reproduced", "rejected")]


def _machine_heading(machine: dict[str, Any], t: dict[str, Any]) -> str:
    """Return ``filler-01 (bottling-line, Modbus TCP, America/Sao_Paulo)`` with the language's brackets and commas."""
    details = t["comma"].join((machine["recording"], machine["protocol"], machine["time_zone"]))
    return f"{machine['id']}{t['paren_open']}{details}{t['paren_close']}"


_DAY_COLUMNS = ("date", "planned", "run", "downtime", "idle", "changeover", "availability", "published")


def _day_cells(day: dict[str, Any], t: dict[str, Any], language: str) -> list[str]:
    return [
        _day(day["date"], language),
        _fmt(day["planned_min"]),
        _fmt(day["run_min"]),
        _fmt(day["downtime_min"]),
        _fmt(day.get("idle_min")),
        _fmt(day.get("changeover_min")),
        _fmt(day["availability"], 3),
        _published_text(day, t),
    ]


def print_report(report: dict[str, Any], console: Console, language: str = "en") -> None:
    """Print the report's tables to a terminal."""
    t = _TEXT[language]
    if not console.is_terminal:
        # Piped output has no width of its own; rich would assume 80 columns and cut the dates.
        console = Console(file=console.file, width=max(console.width, 160))
    for machine in report["machines"]:
        table = Table(title=_machine_heading(machine, t), title_justify="left")
        # A Chinese date such as 2022年12月31日 takes 14 terminal cells, and the column must never cut one.
        date_width = max((cell_len(_day(day["date"], language)) for day in machine["days"]), default=10)
        for key in _DAY_COLUMNS:
            if key == "date":
                table.add_column(t[key], justify="right", no_wrap=True, min_width=date_width)
            else:
                table.add_column(t[key], justify="left" if key == "published" else "right", overflow="fold")
        for day in machine["days"]:
            table.add_row(*_day_cells(day, t, language))
        console.print(table)

    console.print(f"{t['vouchers']}{t['colon']}{t['comma'].join(_voucher_counts(report, t))}")

    table = Table(title=t["value"], title_justify="left")
    for key in ("contract", "anchor", "quantity", "running_days", "amount"):
        table.add_column(t[key])
    for item in report["value"]:
        title = item["title"].get(language) or item["anchor"]
        table.add_row(item["contract"], title, _quantity(item, t), str(item["running_days"]), _money(item["amount"], item["currency"], language))
    table.add_row(t["total"], "", "", "", _money(report["realized_total"], report["currency"], language))
    console.print(table)

    for invoice in report.get("invoices", []):
        status = f"{t['paren_open']}{_status(invoice['status'], t)}{t['paren_close']}"
        console.print(f"{t['invoices']}{t['colon']}{invoice['number']}{status} {_money(invoice['total'], invoice['currency'], language)}")
    for package in report.get("renewal_packages", []):
        console.print(f"{t['packages']}{t['colon']}{package['contract']} · {_trigger(package, t, _titles(report, language), language)} → {package['file']}")
    if report["findings"]:
        console.print(f"{t['findings']}{t['detail_note']}{t['colon']}{len(report['findings'])}")
        for finding in report["findings"]:
            console.print(f"  {finding['machine']} {_day(finding.get('date'), language)} {_finding(finding, t)}")
    if "report_html" in report:
        console.print(f"{t['html_report']}{t['colon']}{report['report_html'][language]}")


def report_html(report: dict[str, Any], language: str) -> str:
    """Return the report as one HTML page with no outside resources."""
    t = _TEXT[language]
    e = html.escape
    parts = [
        f'<!doctype html><html lang="{language}"><head><meta charset="utf-8"><title>{e(t["title"])}</title>',
        "<style>body{font-family:'Noto Sans CJK SC','Noto Sans',sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f3f3f3}td.n{text-align:right}.finding{color:#8a4b00}</style></head><body>",
        f"<h1>{e(t['title'])}</h1><p>{e(t['intro'])}</p><p>{e(t['generated'])}{e(t['colon'])}{e(_generated(report, language))}</p>",
    ]

    for machine in report["machines"]:
        parts.append(f"<h2>{e(t['machine'])} {e(_machine_heading(machine, t))}</h2>")
        parts.append("<table><tr>" + "".join(f"<th>{e(t[key])}</th>" for key in _DAY_COLUMNS) + "</tr>")
        for day in machine["days"]:
            cells = _day_cells(day, t, language)
            parts.append("<tr>" + "".join(f'<td class="n">{e(cell)}</td>' for cell in cells[:-1]) + f"<td>{e(cells[-1])}</td></tr>")
        parts.append("</table>")

    parts.append(f"<h2>{e(t['vouchers'])}</h2><p>{e(' · '.join(_voucher_counts(report, t)))}</p>")

    parts.append(f"<h2>{e(t['value'])}</h2><table><tr>")
    parts.append("".join(f"<th>{e(t[key])}</th>" for key in ("contract", "anchor", "quantity", "running_days", "amount")) + "</tr>")
    for item in report["value"]:
        title = item["title"].get(language) or item["anchor"]
        parts.append(
            f"<tr><td>{e(item['contract'])}</td><td>{e(title)}</td><td class='n'>{e(_quantity(item, t))}</td>"
            f"<td class='n'>{item['running_days']}</td><td class='n'>{e(_money(item['amount'], item['currency'], language))}</td></tr>"
        )
    parts.append(f"<tr><th>{e(t['total'])}</th><td></td><td></td><td></td><th>{e(_money(report['realized_total'], report['currency'], language))}</th></tr></table>")

    if report.get("invoices"):
        parts.append(f"<h2>{e(t['invoices'])}</h2><ul>")
        parts += [
            f"<li>{e(i['number'])}{e(t['paren_open'])}{e(_status(i['status'], t))}{e(t['paren_close'])}{e(t['colon'])}{e(_money(i['total'], i['currency'], language))}</li>"
            for i in report["invoices"]
        ]
        parts.append("</ul>")
    if report.get("renewal_packages"):
        parts.append(f"<h2>{e(t['packages'])}</h2><ul>")
        parts += [f"<li>{e(p['contract'])}{e(t['colon'])}{e(_trigger(p, t, _titles(report, language), language))} → {e(p['file'])}</li>" for p in report["renewal_packages"]]
        parts.append("</ul>")
    if report["findings"]:
        parts.append(f"<h2>{e(t['findings'])}{e(t['detail_note'])}</h2><ul>")
        parts += [f"<li class='finding'>{e(f['machine'])} {e(_day(f.get('date'), language))} {e(_finding(f, t))}</li>" for f in report["findings"]]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
