"""Edge commands: `valuegate keys new|rotate|export-public` for the gateway's signing key."""

from __future__ import annotations

import json
from pathlib import Path

import typer

keys_app = typer.Typer(no_args_is_help=True, help="Manage the gateway's Ed25519 signing key.")

_CONFIG = typer.Option(..., "--config", "-c", help="The agent's edge.yaml; the key lives in STATE_DIR/keys.")


def _load(config_path: Path):  # noqa: ANN202 - returns EdgeConfig, imported lazily
    from valuegate.adapters.errors import ConfigError
    from valuegate.edge.config import load_config

    try:
        # Key commands never reach the broker, so the MQTT password need not be in their environment.
        config = load_config(config_path, need_secrets=False)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from exc
    # The state folder these commands may create is the agent's alone, as the service's StateDirectoryMode=0700 makes it.
    config.state_path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return config


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(1)


_REPLACE_LOST = typer.Option(
    False, "--replace-lost", help="Create a new key after the old one was lost, damaged or compromised and moved aside, also after earlier rotations."
)


@keys_app.command("new")
def new(config_path: Path = _CONFIG, replace_lost: bool = _REPLACE_LOST) -> None:
    """Create the gateway's first signing key (mode 0600) and print its did:key verification method."""
    from valuegate.edge.keys import KeyFileError, create_key

    config = _load(config_path)
    try:
        key = create_key(config.state_path / "keys", replace_lost=replace_lost)
    except KeyFileError as exc:
        raise _fail(exc) from exc
    typer.echo(key.verification_method)
    # The export file carries the key's creation time, which key-add takes as the start of validity, so
    # vouchers the agent signs before the registration are accepted too.
    register_hint = (
        f"`valuegate keys export-public -c {config_path} > {config.gateway}.pub.json`, then in the cloud "
        f"`valuegate cloud admin key-add -c cloud.yaml {config.tenant} {config.gateway} {config.gateway}.pub.json`. "
        "A site with many gateways can instead list each gateway's file as its `key:` in one plan and run "
        "`valuegate cloud admin apply -c cloud.yaml plan.yaml` (the plan format is in docs/cloud.md)"
    )
    if replace_lost:
        typer.echo(
            f"note: no earlier key signed for this one. Register it with {register_hint}. The running agent signs with the new key "
            "from its next voucher on. If the lost key may have been copied, revoke it with `valuegate cloud admin key-revoke`, "
            "but only once the cloud acknowledged every voucher signed with it: the cloud rejects those still on the way",
            err=True,
        )
    else:
        typer.echo(f"note: register the key with {register_hint}", err=True)


@keys_app.command("rotate")
def rotate(config_path: Path = _CONFIG) -> None:
    """Replace the key; the old key signs a statement naming the new key and the first sequence it signs.

    The rotation holds the spool's write lock while it runs, so an agent
    that is running signs every later voucher with the new key.
    """
    import time

    from valuegate.edge.issuer import iso_utc
    from valuegate.edge.keys import KeyFileError, rotate_key
    from valuegate.edge.outbox import chain_head
    from valuegate.edge.spool import Spool, SpoolError

    config = _load(config_path)
    try:
        spool = Spool(config.state_path / "spool.db")
    except SpoolError as exc:
        raise _fail(exc) from exc
    try:
        with spool.transaction():
            from_seq = chain_head(spool).next_seq
            statement = rotate_key(
                config.state_path / "keys",
                tenant=config.tenant,
                site=config.site,
                gateway=config.gateway,
                from_seq=from_seq,
                created=iso_utc(time.time_ns() // 1_000_000),
            )
    except KeyFileError as exc:
        raise _fail(exc) from exc
    finally:
        spool.close()
    typer.echo(json.dumps(statement, indent=2))
    typer.echo(
        f"note: the agent signs from seq {from_seq} on with the new key. It publishes this statement in its status when it signs "
        f"that voucher, or at its next start, and the cloud then registers the new key by itself. Only when the cloud lists no key "
        f"from seq {from_seq} for {config.gateway} after that voucher was stored, register it by hand: "
        f"`valuegate keys export-public -c {config_path} > rotation-statements.json` and "
        f"`valuegate cloud admin key-rotate -c cloud.yaml {config.tenant} {config.gateway} rotation-statements.json`",
        err=True,
    )


@keys_app.command("export-public")
def export_public(config_path: Path = _CONFIG) -> None:
    """Print the public key, its did:key, its creation time and the rotation statements as JSON, for `cloud admin key-add`."""
    from valuegate.edge.keys import KeyFileError
    from valuegate.edge.keys import export_public as export

    config = _load(config_path)
    try:
        public = export(config.state_path / "keys")
    except KeyFileError as exc:
        raise _fail(exc) from exc
    typer.echo(json.dumps({"gateway": config.gateway, "tenant": config.tenant, "site": config.site, **public}, indent=2))


def register(root: typer.Typer) -> None:
    """Add the `keys` command group to the root command line."""
    root.add_typer(keys_app, name="keys")
