"""Request bodies of the REST API, validated by msgspec before a handler runs."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import msgspec

from .inputs import SingleLine

__all__ = (
    "SiteIn",
    "GatewayIn",
    "KeyIn",
    "KeyRevokeIn",
    "RotationIn",
    "ContractIn",
    "UserIn",
    "TokenIn",
    "LoginIn",
    "TenantPatch",
)

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
Name = Annotated[SingleLine, msgspec.Meta(max_length=200)]
Role = Literal["admin", "csm", "finance", "auditor"]


class _Body(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class TenantPatch(_Body):
    """New display name of the caller's tenant."""

    name: Annotated[SingleLine, msgspec.Meta(min_length=1, max_length=200)]


class SiteIn(_Body):
    """A plant site; ``time_zone`` is the IANA zone that defines its plant days."""

    id: Id
    time_zone: Annotated[SingleLine, msgspec.Meta(min_length=1, max_length=64)]
    name: Name = ""


class GatewayIn(_Body):
    """An edge gateway of one site; its id is unique across tenants."""

    id: Id
    site_id: Id
    name: Name = ""


class KeyIn(_Body):
    """A gateway's Ed25519 public key (multibase ``z6Mk...`` or ``did:key:...``) and its validity window."""

    public_key: Annotated[SingleLine, msgspec.Meta(min_length=1, max_length=200)]
    valid_from: dt.datetime | None = None
    valid_until: dt.datetime | None = None


class KeyRevokeIn(_Body):
    """Reason for revoking a key, kept in the audit log; ``force`` revokes even while the key's vouchers are not all stored."""

    reason: Annotated[SingleLine, msgspec.Meta(min_length=1, max_length=500)]
    force: bool = False


class KeyValidFromIn(_Body):
    """An earlier start of a key's validity, and why it moves, for the audit log."""

    valid_from: dt.datetime
    reason: Annotated[SingleLine, msgspec.Meta(max_length=500)] = ""


class RotationIn(_Body):
    """A key-rotation statement (schema ``valuegate/keyrotation/v1``) signed by the gateway's current key."""

    statement: dict[str, Any]


class ContractIn(_Body):
    """The contract file's text, YAML or JSON, of schema ``valuegate/contract/v1``."""

    source: Annotated[str, msgspec.Meta(min_length=1)]


class UserIn(_Body):
    """A user of the caller's tenant; without a password the user can only use API tokens."""

    username: Annotated[SingleLine, msgspec.Meta(min_length=1, max_length=128)]
    roles: Annotated[list[Role], msgspec.Meta(min_length=1)]
    password: Annotated[str, msgspec.Meta(min_length=10, max_length=1024)] | None = None
    display_name: Name = ""


class TokenIn(_Body):
    """An API token for ``user_id`` (the caller when omitted)."""

    name: Name = ""
    user_id: int | None = None
    expires_at: dt.datetime | None = None


class LoginIn(_Body):
    """User name and password of a web session."""

    username: Annotated[SingleLine, msgspec.Meta(min_length=1, max_length=128)]
    password: Annotated[str, msgspec.Meta(min_length=1, max_length=1024)]
