"""`valuegate cloud admin`: tenants, sites, gateways (one by one or from a plan file), machine moves, keys, contracts, users and API tokens."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import typer

from .cli import ConfigOption, DsnOption, explained, run_sync, settings_or_exit

admin_app = typer.Typer(no_args_is_help=True, help="Manage tenants, sites, gateways, keys, contracts, users and API tokens.")


def _admin(config: Path | None, dsn: str | None) -> Any:
    import psycopg

    from .admin import Admin
    from .db import DatabaseUnavailable

    class CliAdmin(Admin):
        async def __aenter__(self) -> Admin:
            try:
                return await super().__aenter__()
            except psycopg.Error as exc:
                raise explained(DatabaseUnavailable.from_error(self.dsn, exc), config, dsn) from None

    return CliAdmin(settings_or_exit(config, dsn=dsn).dsn, actor="cli")


def _settings_args(config: Path | None, dsn: str | None) -> str:
    """Return the settings options to repeat in a printed follow-up command (the DSN itself is not echoed, it may hold a password)."""
    if config is not None:
        return f" -c {config}"
    return " --dsn DSN" if dsn is not None else ""


def _instant(value: str | None, name: str) -> dt.datetime | None:
    if value is None:
        return None
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        typer.echo(f"error: {name} {value!r} is not an ISO 8601 timestamp such as 2026-01-01T00:00:00+08:00", err=True)
        raise typer.Exit(2) from None
    if stamp.tzinfo is None:
        typer.echo(f"error: {name} {value!r} has no time zone; add Z or an offset such as +08:00", err=True)
        raise typer.Exit(2)
    return stamp


@admin_app.command("tenant-create")
def tenant_create(tenant: str, name: str, config: Path | None = ConfigOption, dsn: str | None = DsnOption) -> None:
    """Create a tenant (a vendor's customer account)."""

    async def run() -> None:
        async with _admin(config, dsn) as admin:
            await admin.create_tenant(tenant, name)

    run_sync(run())
    typer.echo(f"tenant {tenant} created")


@admin_app.command("site-create")
def site_create(
    tenant: str, site: str, time_zone: str = typer.Option(..., help="IANA zone of the plant, for example Asia/Shanghai."),
    name: str = typer.Option("", help="Display name."), config: Path | None = ConfigOption, dsn: str | None = DsnOption,
) -> None:  # fmt: skip
    """Create a site of a tenant."""

    async def run() -> None:
        async with _admin(config, dsn) as admin:
            await admin.create_site(tenant, site, name or site, time_zone)

    run_sync(run())
    typer.echo(f"site {tenant}/{site} created")


@admin_app.command("gateway-create")
def gateway_create(tenant: str, site: str, gateway: str, config: Path | None = ConfigOption, dsn: str | None = DsnOption) -> None:
    """Register a gateway at a site."""

    async def run() -> None:
        async with _admin(config, dsn) as admin:
            await admin.create_gateway(tenant, site, gateway)

    run_sync(run())
    typer.echo(f"gateway {gateway} registered at {tenant}/{site}")


@admin_app.command("apply")
def apply(
    plan_file: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML plan: tenant, sites, gateways with key files, contract files (see docs/cloud.md)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the plan against the database and print what it would do, then roll back."),
    config: Path | None = ConfigOption, dsn: str | None = DsnOption,
) -> None:  # fmt: skip
    """Create a tenant's sites, gateways, keys and contracts from one plan file, in one transaction.

    Applying the same plan again changes nothing; an object that exists but
    differs from the plan is an error that names the field.
    """
    from .provision import apply_plan, load_plan

    class DryRun(Exception):
        pass

    async def run() -> list[Any]:
        plan = load_plan(plan_file)
        async with _admin(config, dsn) as admin:
            steps: list[Any] = []
            try:
                async with admin.conn.transaction():
                    steps = await apply_plan(admin.conn, plan, plan_file.parent, actor=admin.actor)
                    if dry_run:
                        raise DryRun
            except DryRun:
                pass
            return steps

    steps = run_sync(run())
    for step in steps:
        typer.echo(f"{'would create' if dry_run and step.action == 'created' else step.action:>12}  {step.kind} {step.name}")
    created = sum(step.action == "created" for step in steps)
    verb = "would be created (dry run, nothing written)" if dry_run else "created"
    typer.echo(f"{created} {verb}, {len(steps) - created} unchanged")


@admin_app.command("machine-move")
def machine_move(
    tenant: str,
    machine: str,
    gateway: str,
    since: str | None = typer.Option(None, "--from", help="Instant the gateway takes over, with offset (default now); minutes before it stay with the previous gateway."),
    config: Path | None = ConfigOption,
    dsn: str | None = DsnOption,
) -> None:
    """Make a gateway the source of a machine's telemetry from an instant on, for example after replacing a gateway box."""
    start = _instant(since, "--from")

    async def run() -> dict[str, Any]:
        async with _admin(config, dsn) as admin:
            return await admin.move_machine(tenant, machine, gateway, since=start)

    moved = run_sync(run())
    typer.echo(
        f"machine {machine} of {tenant}: telemetry from {moved['since']} on accepted from gateway {gateway} "
        f"(was {moved['from_gateway'] or 'none'}); {moved['verdicts_reopened']} voucher verdict(s) reopened"
    )
    if not moved["known"]:
        typer.echo(f"note: no gateway has sent telemetry of machine {machine} yet; check the id against the tag map", err=True)


def _public_key_file(path: Path, tenant: str, gateway: str) -> tuple[str, dt.datetime | None]:
    """Read the verification method and key creation time from a `valuegate keys export-public` file."""
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read {path} as the JSON of `valuegate keys export-public`: {exc}", err=True)
        raise typer.Exit(2) from None
    method = data.get("verification_method") if isinstance(data, dict) else None
    if not isinstance(method, str):
        typer.echo(f"error: {path} has no verification_method; write it with `valuegate keys export-public -c edge.yaml > {path.name}`", err=True)
        raise typer.Exit(2)
    for field, expected in (("tenant", tenant), ("gateway", gateway)):
        if data.get(field) not in (None, expected):
            typer.echo(f"error: {path} is the key of {field} {data[field]!r}, not {expected!r}; check the file and the arguments", err=True)
            raise typer.Exit(2)
    created = data.get("created")
    return method, _instant(created, f"created in {path}") if isinstance(created, str) else None


@admin_app.command("key-add")
def key_add(
    tenant: str, gateway: str,
    public_key: str = typer.Argument(..., help="The JSON file of `valuegate keys export-public`, or a multibase (z6Mk...) or did:key public key."),
    valid_from: str | None = typer.Option(
        None, help="Start of validity (ISO 8601 with zone); default the key's creation time from an export-public file, else now."
    ),
    valid_until: str | None = typer.Option(None, help="End of validity (ISO 8601 with zone); default open."),
    config: Path | None = ConfigOption, dsn: str | None = DsnOption,
) -> None:  # fmt: skip
    """Register a gateway's signing key.

    Vouchers the agent signed before the key's start are rejected, so give
    the export-public file, whose creation time becomes the start.
    """
    start = _instant(valid_from, "valid_from")
    source = Path(public_key)
    created = None
    if public_key.endswith(".json") or source.is_file():
        if not source.is_file():
            typer.echo(f"error: public key file {public_key} not found; write it with `valuegate keys export-public -c edge.yaml > {source.name}`", err=True)
            raise typer.Exit(2)
        public_key, created = _public_key_file(source, tenant, gateway)
    start = start or created

    async def run() -> dict[str, Any]:
        async with _admin(config, dsn) as admin:
            return await admin.add_key(tenant, gateway, public_key, valid_from=start, valid_until=_instant(valid_until, "valid_until"))

    row = run_sync(run())
    typer.echo(f"key {row['id']} registered for gateway {gateway}, valid from {row['valid_from'].isoformat()}")
    if start is None:
        typer.echo(
            f"note: vouchers the agent signed before now are rejected as key_not_valid; move the start back to the key's creation time "
            f"with `valuegate cloud admin key-valid-from{_settings_args(config, dsn)} {tenant} {gateway} {row['id']} CREATED` "
            "if the agent already ran with this key",
            err=True,
        )


@admin_app.command("key-valid-from")
def key_valid_from(
    tenant: str, gateway: str, key_id: int,
    valid_from: str = typer.Argument(..., help="New, earlier start of validity (ISO 8601 with zone), usually the key's creation time."),
    reason: str = typer.Option("", help="Why, for the audit log."),
    config: Path | None = ConfigOption, dsn: str | None = DsnOption,
) -> None:  # fmt: skip
    """Move a registered key's validity start earlier, so that vouchers signed before its registration are stored at the next resend."""
    start = _instant(valid_from, "valid_from")

    async def run() -> dict[str, Any]:
        async with _admin(config, dsn) as admin:
            return await admin.move_key_valid_from(tenant, gateway, key_id, start, reason=reason)  # type: ignore[arg-type]

    row = run_sync(run())
    typer.echo(f"key {key_id} of gateway {gateway} valid from {row['valid_from'].isoformat()}")


@admin_app.command("key-revoke")
def key_revoke(
    tenant: str,
    gateway: str,
    key_id: int,
    reason: str = typer.Option(..., help="Why, for the audit log."),
    force: bool = typer.Option(False, "--force", help="Revoke even while the gateway may still sign with the key or vouchers it signed are not stored (a key that may have been copied)."),
    config: Path | None = ConfigOption,
    dsn: str | None = DsnOption,
) -> None:
    """Revoke a gateway key: vouchers signed with it are rejected from now on.

    Refused while the gateway may still sign with the key or while vouchers it
    signed are not stored yet, since those would stay missing for good.
    """

    async def run() -> dict[str, Any]:
        async with _admin(config, dsn) as admin:
            return await admin.revoke_key(tenant, gateway, key_id, reason, force=force)

    row = run_sync(run())
    if row["already_revoked"]:
        typer.echo(f"key {key_id} of gateway {gateway} was already revoked at {row['revoked_at'].isoformat()}; nothing changed")
    else:
        typer.echo(f"key {key_id} of gateway {gateway} revoked")


@admin_app.command("key-rotate")
def key_rotate(tenant: str, gateway: str, file: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSON: one rotation statement, a list of them, or an object with a 'rotations' list."), config: Path | None = ConfigOption, dsn: str | None = DsnOption) -> None:
    """Register a gateway's next keys from rotation statements signed by the keys before them."""
    import json

    data = json.loads(file.read_text(encoding="utf-8"))
    statements = data.get("rotations", [data]) if isinstance(data, dict) else data

    async def run() -> list[dict[str, Any]]:
        async with _admin(config, dsn) as admin:
            return [await admin.register_rotation(tenant, gateway, statement) for statement in statements]

    for row in run_sync(run()):
        typer.echo(f"key {row['id']} signs gateway {gateway} from seq {row['from_seq']}")


@admin_app.command("contract-upload")
def contract_upload(tenant: str, file: Path = typer.Argument(..., exists=True, dir_okay=False), config: Path | None = ConfigOption, dsn: str | None = DsnOption) -> None:
    """Upload a contract YAML or JSON file as the contract's next revision; print the digest of its terms."""
    from valuegate.edge.protocol.contract import ContractError, load_contract

    # Check the file first, so that its problems name the file and line, not "uploaded contract".
    try:
        load_contract(file)
    except ContractError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None

    async def run() -> tuple[dict[str, Any], bool]:
        async with _admin(config, dsn) as admin:
            return await admin.upload_contract(tenant, file)

    row, created = run_sync(run())
    typer.echo(f"contract {row['id']} revision {row['revision']} {'stored' if created else 'unchanged'}; terms digest {row['contract_digest']}")


@admin_app.command("package-deliver")
def package_deliver(tenant: str, package_id: int, config: Path | None = ConfigOption, dsn: str | None = DsnOption) -> None:
    """Deliver a renewal package to the tenant's webhook again and wait for the attempts (up to eight, a few minutes)."""
    from .renewal import service

    networks = settings_or_exit(config, dsn=dsn).webhook_networks

    async def run() -> bool | None:
        async with _admin(config, dsn) as admin:
            async with admin.conn.transaction():
                await service.request_redelivery(admin.conn, tenant, package_id, actor=admin.actor)
                # Claimed before the audit record commits: while another delivery runs, nothing is recorded.
                claim = await service.claim_delivery(admin.dsn, tenant, package_id)
            return await service.deliver_claimed(claim, allowed_networks=networks)

    delivered = run_sync(run())
    if not delivered:
        typer.echo(f"error: package {package_id} was not delivered; the package page lists each attempt's HTTP status or error", err=True)
        raise typer.Exit(1)
    typer.echo(f"package {package_id} delivered")


@admin_app.command("user-create")
def user_create(
    tenant: str, username: str, role: list[str] = typer.Option(..., "--role", help="admin, csm, finance or auditor; repeat for several."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from standard input (web login); without it the user can only use API tokens."),
    display_name: str = typer.Option("", "--display-name", help="Name that pages, exports and PDFs show for the user, such as '张财务 Zhang'; one line of at most 200 characters. Without it they show the user name."),
    config: Path | None = ConfigOption, dsn: str | None = DsnOption,
) -> None:  # fmt: skip
    """Create a user of a tenant."""
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None

    async def run() -> dict[str, Any]:
        async with _admin(config, dsn) as admin:
            return await admin.create_user(tenant, username, role, password=password, display_name=display_name)

    row = run_sync(run())
    shown_as = f", shown as {row['display_name']}" if row["display_name"] else ""
    typer.echo(f"user {username} ({row['id']}) created with roles {', '.join(row['roles'])}{shown_as}")


@admin_app.command("token-issue")
def token_issue(tenant: str, username: str, name: str = typer.Option("", help="Label of the token."), config: Path | None = ConfigOption, dsn: str | None = DsnOption) -> None:
    """Issue an API token for a user and print it once; only its hash is stored."""

    async def run() -> str:
        async with _admin(config, dsn) as admin:
            return await admin.issue_token(tenant, username, name)

    typer.echo(run_sync(run()))


@admin_app.command("user-disable")
def user_disable(tenant: str, username: str, config: Path | None = ConfigOption, dsn: str | None = DsnOption) -> None:
    """Disable a user: end their sessions and revoke their API tokens. The user is kept and the name stays taken."""

    async def run() -> dict[str, Any]:
        async with _admin(config, dsn) as admin:
            return await admin.disable_user(tenant, username)

    row = run_sync(run())
    typer.echo(f"user {username} ({row['id']}) of {tenant} disabled; its sessions ended and its API tokens are revoked")


@admin_app.command("user-enable")
def user_enable(tenant: str, username: str, config: Path | None = ConfigOption, dsn: str | None = DsnOption) -> None:
    """Enable a disabled user and clear the user's failed log-in counts, which also lifts a log-in lockout.

    Issue new API tokens after enabling a disabled user, because the old ones stay revoked.
    """

    async def run() -> dict[str, Any]:
        async with _admin(config, dsn) as admin:
            return await admin.enable_user(tenant, username)

    row = run_sync(run())
    state = "was already enabled" if row["already_enabled"] else "enabled"
    cleared = row["login_failures_cleared"]
    addresses = "client address" if cleared == 1 else "client addresses"
    typer.echo(f"user {username} ({row['id']}) of {tenant} {state}; failed log-in counts cleared for {cleared} {addresses}")


@admin_app.command("token-revoke")
def token_revoke(
    tenant: str, token_id: str = typer.Argument(..., help="Token id as GET /api/v1/tokens lists it (the part after 'vgt_' up to the next '_'), or the whole token."),
    config: Path | None = ConfigOption, dsn: str | None = DsnOption,
) -> None:  # fmt: skip
    """Revoke an API token; requests with it get 401 from now on."""
    # A whole token is cut to its id here, so that its secret never reaches an error message.
    token_id = token_id.split("_", 2)[1] if token_id.startswith("vgt_") and token_id.count("_") >= 2 else token_id

    async def run() -> dict[str, Any]:
        async with _admin(config, dsn) as admin:
            return await admin.revoke_token(tenant, token_id)

    row = run_sync(run())
    typer.echo(f"API token {token_id} of user {row['user_id']} revoked")
