"""Render the demo report as a terminal summary and as a standalone HTML page (zh-CN or English)."""

from __future__ import annotations

import html
from typing import Any

from rich.console import Console
from rich.table import Table

__all__ = ("print_report", "report_html")

_TEXT = {
    "zh-CN": {
        "title": "valuegate 演示：已验证的价值报告",
        "machine": "设备",
        "date": "日期",
        "planned": "计划运行 (分)",
        "run": "实际运行 (分)",
        "downtime": "非计划停机 (分)",
        "availability": "可用率",
        "published": "记录自带数据",
        "difference": "差异",
        "vouchers": "凭证",
        "issued": "已签发",
        "stored": "已存储",
        "verified": "已验证",
        "reproduced": "已复算一致",
        "rejected": "已拒收",
        "value": "已实现价值",
        "contract": "合同",
        "anchor": "价值锚点",
        "quantity": "数量",
        "running_days": "运行天数",
        "amount": "金额",
        "total": "合计",
        "findings": "数据质量发现",
        "invoices": "发票",
        "packages": "续约准备包",
        "pause": "暂停",
        "efficiency": "效率",
        "auto_time": "自动运行时间增量",
        "total_time": "通电时间增量",
        "points": "点",
        "minutes": "分钟",
        "generated": "生成时间",
        "intro": "以下数值由边缘代理从模拟 PLC 读取的数据计算，经签名凭证传至云端并验证后存储；旁列为录制数据本身公布的数字。",
    },
    "en": {
        "title": "valuegate demo: verified value report",
        "machine": "Machine",
        "date": "Date",
        "planned": "Planned busy (min)",
        "run": "Run (min)",
        "downtime": "Unplanned downtime (min)",
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
        "intro": "The numbers below were computed by the edge agent from the simulated PLCs, carried to the cloud in signed vouchers and stored after verification; beside them are the figures the recording itself publishes.",
    },
}


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _published_text(day: dict[str, Any], t: dict[str, str]) -> str:
    published = day.get("published") or {}
    if "pause_min" in published:
        return f"{t['pause']} {published['pause_min']:.1f}, {t['efficiency']} {published['efficiency']:.3f}"
    if "auto_time_min" in published:
        return f"{t['auto_time']} {_fmt(published['auto_time_min'])}, {t['total_time']} {_fmt(published['total_time_min'])}"
    return ""


def _quantity(item: dict[str, Any], t: dict[str, str]) -> str:
    if item["metric"] == "unplanned_downtime_rate":
        return f"{item['avoided_minutes']} {t['minutes']}"
    return f"{item['points_gained']} {t['points']}"


def print_report(report: dict[str, Any], console: Console, language: str = "en") -> None:
    """Print the report's tables to a terminal."""
    t = _TEXT[language]
    for machine in report["machines"]:
        table = Table(title=f"{machine['id']} ({machine['recording']}, {machine['protocol']}, {machine['time_zone']})", title_justify="left")
        for column in (t["date"], t["planned"], t["run"], t["downtime"], t["availability"], t["published"]):
            table.add_column(column, justify="right" if column != t["published"] else "left")
        for day in machine["days"]:
            table.add_row(
                day["date"], _fmt(day["planned_min"]), _fmt(day["run_min"]), _fmt(day["downtime_min"]), _fmt(day["availability"], 3),
                _published_text(day, t),
            )  # fmt: skip
        console.print(table)

    counts = report["vouchers"]
    console.print(
        f"{t['vouchers']}: {counts['issued']} {t['issued']}, {counts['verified']} {t['verified']}, {counts['stored']} {t['stored']}, "
        f"{counts['reproduced']} {t['reproduced']}, {counts['rejected']} {t['rejected']}"
    )
    table = Table(title=t["value"], title_justify="left")
    for column in (t["contract"], t["anchor"], t["quantity"], t["running_days"], t["amount"]):
        table.add_column(column)
    for item in report["value"]:
        table.add_row(item["contract"], item["anchor"], _quantity(item, t), str(item["running_days"]), f"{item['amount']} {item['currency']}")
    table.add_row(t["total"], "", "", "", f"{report['realized_total']} {report['currency']}")
    console.print(table)
    for invoice in report.get("invoices", []):
        console.print(f"{t['invoices']}: {invoice['number']} ({invoice['status']}) {invoice['total']} {invoice['currency']}")
    for package in report.get("renewal_packages", []):
        console.print(f"{t['packages']}: {package['contract']} {package['trigger']} -> {package['file']}")
    if report["findings"]:
        console.print(f"{t['findings']}: {len(report['findings'])}")
        for finding in report["findings"]:
            console.print(f"  {finding['machine']} {finding.get('date', '')} {finding['kind']}: {finding['detail']}")


def report_html(report: dict[str, Any], language: str) -> str:
    """Return the report as one HTML page with no outside resources."""
    t = _TEXT[language]
    e = html.escape
    parts = [
        f'<!doctype html><html lang="{language}"><head><meta charset="utf-8"><title>{e(t["title"])}</title>',
        "<style>body{font-family:'Noto Sans CJK SC','Noto Sans',sans-serif;margin:2em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
        "th{background:#f3f3f3}td.n{text-align:right}.finding{color:#8a4b00}</style></head><body>",
        f"<h1>{e(t['title'])}</h1><p>{e(t['intro'])}</p><p>{e(t['generated'])}: {e(report['generated_at'])}</p>",
    ]

    for machine in report["machines"]:
        parts.append(f"<h2>{e(t['machine'])} {e(machine['id'])} ({e(machine['recording'])}, {e(machine['protocol'])}, {e(machine['time_zone'])})</h2>")
        parts.append("<table><tr>" + "".join(f"<th>{e(t[k])}</th>" for k in ("date", "planned", "run", "downtime", "availability", "published")) + "</tr>")
        for day in machine["days"]:
            cells = [day["date"], _fmt(day["planned_min"]), _fmt(day["run_min"]), _fmt(day["downtime_min"]), _fmt(day["availability"], 3)]
            parts.append("<tr>" + "".join(f'<td class="n">{e(c)}</td>' for c in cells) + f"<td>{e(_published_text(day, t))}</td></tr>")
        parts.append("</table>")

    counts = report["vouchers"]
    parts.append(
        f"<h2>{e(t['vouchers'])}</h2><p>{counts['issued']} {e(t['issued'])} · {counts['verified']} {e(t['verified'])} · "
        f"{counts['stored']} {e(t['stored'])} · {counts['reproduced']} {e(t['reproduced'])} · {counts['rejected']} {e(t['rejected'])}</p>"
    )

    parts.append(f"<h2>{e(t['value'])}</h2><table><tr>")
    parts.append("".join(f"<th>{e(t[k])}</th>" for k in ("contract", "anchor", "quantity", "running_days", "amount")) + "</tr>")
    for item in report["value"]:
        title = item["title"].get(language) or item["anchor"]
        parts.append(
            f"<tr><td>{e(item['contract'])}</td><td>{e(title)}</td><td class='n'>{e(_quantity(item, t))}</td>"
            f"<td class='n'>{item['running_days']}</td><td class='n'>{e(str(item['amount']))} {e(item['currency'])}</td></tr>"
        )
    parts.append(f"<tr><th>{e(t['total'])}</th><td></td><td></td><td></td><th>{e(report['realized_total'])} {e(report['currency'])}</th></tr></table>")

    if report.get("invoices"):
        parts.append(f"<h2>{e(t['invoices'])}</h2><ul>")
        parts += [f"<li>{e(i['number'])} ({e(i['status'])}): {e(i['total'])} {e(i['currency'])}</li>" for i in report["invoices"]]
        parts.append("</ul>")
    if report.get("renewal_packages"):
        parts.append(f"<h2>{e(t['packages'])}</h2><ul>")
        parts += [f"<li>{e(p['contract'])}: {e(p['trigger'])} → {e(p['file'])}</li>" for p in report["renewal_packages"]]
        parts.append("</ul>")
    if report["findings"]:
        parts.append(f"<h2>{e(t['findings'])}</h2><ul>")
        parts += [
            f"<li class='finding'>{e(f['machine'])} {e(str(f.get('date', '')))} <b>{e(f['kind'])}</b>: {e(f['detail'])}</li>" for f in report["findings"]
        ]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)
