"""The `valuegate verify` command: check an auditor bundle offline and print a verdict per voucher and line."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

# Exit statuses: 0 every check passed, 1 some check failed, 2 the bundle could not be read.
EXIT_FAILED = 1
EXIT_UNREADABLE = 2


def _print_section(title: str, verdicts: list) -> None:
    typer.echo(f"{title}:")
    for verdict in verdicts:
        mark = "PASS"
        if not verdict.ok:
            mark = "FAIL"
        elif not verdict.checked:
            # A file no check reads neither passes nor fails.
            mark = "NOTE"
        typer.echo(f"  {mark}  {verdict.subject}")
        for reason in verdict.reasons:
            typer.echo(f"        - {reason}")
        for note in verdict.notes:
            typer.echo(f"        . {note}")


class _Progress:
    """Print the step under way to stderr every few seconds while a check runs; a check shorter than that prints nothing.

    A ticker thread prints, so that one long step (unpacking a large file, reading a long record file) still shows.
    """

    def __init__(self, every_s: float = 5.0) -> None:
        self._every_s = every_s
        self._step = ""
        self._started = time.monotonic()
        self._done = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="verify-progress", daemon=True)
        self._ticker.start()

    def __call__(self, step: str) -> None:
        self._step = step

    def _tick(self) -> None:
        while not self._done.wait(self._every_s):
            if self._step:
                typer.echo(f"verify: {self._step} ({time.monotonic() - self._started:.0f} s)", err=True)

    def close(self) -> None:
        self._done.set()
        self._ticker.join()


@contextlib.contextmanager
def _stopped_cleanly() -> Iterator[None]:
    """Turn SIGTERM and SIGHUP into SystemExit for the block, so that a stopped check removes its unpacked records as Ctrl-C does."""

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _count(number: int, word: str) -> str:
    return f"{number} {word}" if number == 1 else f"{number} {word}s"


def verify(
    bundle: Path = typer.Argument(..., help="Bundle ZIP file, or the folder it was unpacked into."),
    as_json: bool = typer.Option(False, "--json", help="Print the verdicts as one JSON object instead of text."),
) -> None:
    """Verify an auditor bundle offline: voucher proofs, gateway keys, chains and invoice lines.

    Prints the contract terms digest of every revision the bundle carries and
    each gateway's first key: compare them with the signed contract and the
    plant's own records, because no signature covers the contract files or keys.json.
    """
    from valuegate.cloud.bundle import BundleError
    from valuegate.verify import verify_bundle
    from valuegate.verify_keys import COMPARE_KEY

    progress = _Progress()
    try:
        with _stopped_cleanly():
            report = verify_bundle(bundle, progress)
    except BundleError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from exc
    finally:
        progress.close()

    if as_json:
        typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, indent=2))
    else:
        _print_section("files", report.files)
        _print_section("gateway keys", report.keys)
        _print_section("vouchers", report.vouchers)
        _print_section("invoice lines", report.lines)
        _print_section("documents", report.documents)
        # contract.json carries no signature: the digest is what ties the prices to the signed contract.
        in_force = "" if report.contract_revision is None else f" (revision {report.contract_revision}, in force, contract.json)"
        typer.echo(f"contract {report.contract_id} terms digest: {report.contract_digest}{in_force}")
        typer.echo("  compare it with the digest printed on the signed contract or invoice; the prices come from contract.json, which no gateway signature covers")
        # Documents issued before an amendment are priced with the earlier revision they recorded, carried in a file of its own.
        for item in report.revisions:
            documents = ", ".join(str(number) for number in item["documents"]) or "no document"
            digest = item["digest"] or "unknown, the file is missing or unreadable"
            typer.echo(f"contract {report.contract_id} revision {item['revision']} terms digest: {digest} ({item['file']}, prices {documents})")
        if report.revisions:
            typer.echo("  compare each revision's digest with the signed contract revision, or with the digest printed on the invoices it prices")
        # keys.json carries no signature either: the first key of each gateway ties the vouchers to the plant's gateway.
        for gateway in report.gateways:
            for key in gateway["keys"]:
                last = "" if key["lastSeq"] is None else key["lastSeq"]
                if key["introduced_by"] == "replacement":
                    first = key["firstSeq"] if key["firstSeq"] is not None else "none in this bundle"
                    window = f"valid {key['validFrom'] or 'open'}..{key['validTo'] or 'open'}, sequences {first}..{last}"
                    typer.echo(f"gateway {gateway['gateway']} replacement key: {key['id']} (key id {key['key_id']}, {window}; "
                               "registered without a rotation statement, after a lost key)")
                elif key["compare_out_of_band"]:
                    window = f"valid {key['validFrom'] or 'open'}..{key['validTo'] or 'open'}"
                    if key["lastSeq"] is not None and key["untilSeq"] is None:
                        window += f", sequences {key['firstSeq']}..{last}"
                    typer.echo(f"gateway {gateway['gateway']} first key: {key['id']} (key id {key['key_id']}, {window})")
                else:
                    until = "" if key["lastSeq"] is None or key["lastSeq"] == key["untilSeq"] else f", until sequence {key['lastSeq']}"
                    typer.echo(f"gateway {gateway['gateway']} next key: {key['id']} (from sequence {key['fromSeq']}{until}; "
                               "the rotation statement signed by the key before it verified)")
        if report.gateways:
            typer.echo(f"  {COMPARE_KEY}")
        evidence = report.evidence
        if evidence.files:
            typer.echo(f"evidence: {_count(evidence.recomputed, 'voucher')} recomputed from {_count(evidence.records, 'minute record')} "
                       f"in {_count(evidence.files, 'record file')}, {evidence.failed} failed, {evidence.not_checked} not checked")
        elif report.vouchers:
            typer.echo("evidence: the bundle carries no minute records, so no evidence root was rebuilt")
        failed = sum(not v.ok for v in report.verdicts)
        verdict = "PASS" if report.ok else f"FAIL ({failed} failed)"
        counts = f"{_count(len(report.vouchers), 'voucher')}, {_count(len(report.documents), 'document')} with {_count(len(report.lines), 'invoice line')}"
        if report.unchecked:
            counts += f"; {_count(len(report.unchecked), 'file')} not listed in the manifest, not checked"
        typer.echo(f"bundle {bundle}: {verdict}: {counts}")
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def register(root: typer.Typer) -> None:
    """Add this command to the root command line."""
    root.command("verify")(verify)
