"""The demo's finance step: an approved invoice per contract, its exports, and the renewal-prep packages."""

from __future__ import annotations

import asyncio
import datetime as dt
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .stack import TENANT, DemoStack

__all__ = ("settle_and_package",)


def _download(stack: DemoStack, token: str, path: str, target: Path) -> Path:
    request = urllib.request.Request(stack.api_url + path, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - a loopback URL the demo started itself
            target.write_bytes(response.read())
    except urllib.error.HTTPError as exc:
        msg = f"GET {path} answered {exc.code}: {exc.read()[:300].decode(errors='replace')}"
        raise RuntimeError(msg) from exc
    return target


async def settle_and_package(stack: DemoStack, out_dir: Path) -> dict[str, Any]:
    """Run and approve one invoice per contract over its reporting period, export it, and build renewal packages."""
    import psycopg

    from valuegate.cloud.admin import Admin
    from valuegate.cloud.renewal.service import check_renewals, get_package, list_packages
    from valuegate.cloud.settlement import store as settlement
    from valuegate.cloud.settlement.invoice import BillingPeriod
    from valuegate.edge.protocol.contract import load_contract

    out_dir.mkdir(parents=True, exist_ok=True)
    async with Admin(stack.dsn, actor="demo") as admin:
        finance_token = await admin.issue_token(TENANT, "finance", "demo exports")

    invoices: list[dict[str, Any]] = []
    packages: list[dict[str, Any]] = []
    async with await psycopg.AsyncConnection.connect(stack.dsn, autocommit=True) as conn:
        for path in stack.options.contracts:
            contract = load_contract(path)
            period = BillingPeriod(min(a.reporting.first_date for a in contract.anchors), max(a.reporting.last_date for a in contract.anchors))
            async with conn.transaction():
                run = await settlement.run_invoice(conn, TENANT, contract.id, period, actor="finance")
            async with conn.transaction():
                run = await settlement.approve_run(conn, TENANT, run["id"], actor="finance")
            documents = await settlement.run_documents(conn, TENANT, run["id"])
            invoice = documents[0]
            files = []
            for language in ("zh-CN", "en"):
                for kind in ("csv", "pdf"):
                    target = out_dir / f"{run['invoice_number']}.{language}.{kind}"
                    url = f"/runs/{run['id']}/export.{kind}?language={language}"
                    files.append(str(await asyncio.to_thread(_download, stack, finance_token, url, target)))
            invoices.append(
                {
                    "contract": contract.id,
                    "number": run["invoice_number"],
                    "status": run["status"],
                    "period": f"{period.first}..{period.last}",
                    "total": str(invoice["total"]),
                    "currency": invoice["currency"],
                    "files": files,
                }
            )

            # Triggers are evaluated on the day after the reporting period, as if the replay were live.
            today = period.last + dt.timedelta(days=1)
            async with conn.transaction():
                await check_renewals(conn, TENANT, contract.id, today=today, actor="demo")
            for row in await list_packages(conn, TENANT, contract.id):
                package = await get_package(conn, TENANT, row["id"])
                target = out_dir / f"renewal-{contract.id}-{row['trigger_key'].replace(':', '-')}.zip"
                target.write_bytes(package["archive"])
                packages.append(
                    {
                        "contract": contract.id,
                        "trigger": row["trigger_key"],
                        "trigger_kind": row["trigger_kind"],
                        "detail": row["detail"],
                        "file": str(target),
                        "sha256": row["archive_sha256"],
                    }
                )
    return {"invoices": invoices, "renewal_packages": packages}
