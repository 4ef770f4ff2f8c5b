"""Benchmark the invoice PDF of a year: voucher ids as one text run per line against one no-wrap element per id.

Run: .venv/bin/python bench/invoice_pdf.py [--lines 50] [--vouchers 365] [--language en]

The invoice has one document with ``--lines`` lines, each listing
``--vouchers`` voucher ids (``gw-a07:1000`` and on), as a year's invoice of
50 anchors with one voucher a day does. ``current`` renders it with
:func:`valuegate.cloud.settlement.export.pdf_bytes`. The reference renders
the same HTML with each id in its own ``<span>`` with ``white-space: nowrap``,
as the template did before. Each rendering runs in a child process, and the
benchmark prints its wall time, peak resident memory (VmHWM, with the
interpreter and WeasyPrint loaded) and page count. Both PDFs must hold the
same text on every page.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def documents(lines: int, vouchers: int) -> tuple[list[dict], dict, dict, object]:
    """Return the run's documents, the run, an adjustment and the contract terms, from the settlement tests' March run."""
    sys.path.insert(0, str(ROOT))
    from tests.settlement.test_export import ADJUSTMENT, TERMS, march_run
    from tests.settlement.test_invoice_pdf import RUN

    invoice = copy.deepcopy(march_run()[0])
    template = invoice["record"]["lines"][0]
    rows = []
    for number in range(lines):
        row = copy.deepcopy(template)
        row["voucher_ids"] = [f"gw-a{number:02d}:{seq}" for seq in range(1000, 1000 + vouchers)]
        rows.append(row)
    invoice["record"]["lines"] = rows
    return [invoice], RUN, ADJUSTMENT, TERMS


def render(mode: str, lines: int, vouchers: int, language: str, out: str) -> None:
    """Render the invoice in this process (``current`` or ``reference``) and write the PDF's page texts as JSON to ``out``."""
    import markupsafe
    from pypdf import PdfReader
    from weasyprint import HTML

    from valuegate.cloud.settlement import export

    docs, run, adjustment, terms = documents(lines, vouchers)
    started = time.perf_counter()
    if mode == "current":
        pdf = export.pdf_bytes(run=run, documents=docs, adjustments=[adjustment], contract=terms, language=language)
    else:
        export.id_list = lambda ids: markupsafe.Markup(" ").join(markupsafe.Markup('<span class="vid">{}</span>').format(i) for i in ids)
        html = export.invoice_html(run=run, documents=docs, adjustments=[adjustment], contract=terms, language=language)
        pdf = HTML(string=html.replace("</style>", ".vid { white-space: nowrap; }\n</style>", 1)).write_pdf()
    seconds = time.perf_counter() - started
    status = Path("/proc/self/status").read_text()
    peak_mb = int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024
    texts = [page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages]
    Path(out).write_text(json.dumps({"seconds": seconds, "peak_mb": peak_mb, "bytes": len(pdf), "texts": texts}))


def run_child(mode: str, args: argparse.Namespace, out: Path) -> dict:
    command = [sys.executable, __file__, "--child", mode, "--lines", str(args.lines), "--vouchers", str(args.vouchers), "--language", args.language,
               "--out", str(out)]
    subprocess.run(command, check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=50, help="invoice lines (anchors)")
    parser.add_argument("--vouchers", type=int, default=365, help="voucher ids per line")
    parser.add_argument("--language", choices=("en", "zh-CN"), default="en")
    parser.add_argument("--child", choices=("current", "reference"))
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    if args.child:
        render(args.child, args.lines, args.vouchers, args.language, args.out)
        return

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {os.getloadavg()[0]:.1f}")
    print(f"invoice: {args.lines} lines x {args.vouchers} voucher ids, {args.language}")
    with tempfile.TemporaryDirectory(prefix="bench-invoice-") as folder:
        results = {mode: run_child(mode, args, Path(folder) / f"{mode}.json") for mode in ("current", "reference")}
    for mode, result in results.items():
        print(f"{mode:9}: {result['seconds']:6.1f} s  peak RSS {result['peak_mb']:6.1f} MB  {len(result['texts'])} pages  {result['bytes']:,} bytes")
    current, reference = results["current"], results["reference"]
    print(f"current / reference: time {current['seconds'] / reference['seconds']:.2f}, peak RSS {current['peak_mb'] / reference['peak_mb']:.2f}")
    if current["texts"] != reference["texts"]:
        raise SystemExit("the text of the two PDFs differs, so the faster rendering changed what the invoice contains; check the layout change in cloud/settlement/export.py")
    print("text of every page: identical")


if __name__ == "__main__":
    main()
