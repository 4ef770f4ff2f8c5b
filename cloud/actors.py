"""Readable names of the actors that rows record, such as ``user:acme.finance``, ``system`` or ``cli``.

Tables, the audit log and the API keep the actor id, because scripts and
auditors match on it. Pages, invoice PDFs and CSV exports show a person's
name instead: the user's display name, or the login name where the display
name is empty. Queries read that name next to the id with :func:`name_sql`,
and :func:`actor_label` turns the pair into the text shown.
"""

from __future__ import annotations

from valuegate.cloud.web.i18n import translate

__all__ = ("USER_PREFIX", "actor_label", "name_sql")

# The actor id of a request made by a logged-in user or with one of the user's API tokens (see auth.Principal.actor).
USER_PREFIX = "user:"
# NOTE: the cloud writes no token: ids at present, because a request with an API token records the token's user.
# The label keeps such an id readable should a tool write one.
TOKEN_PREFIX = "token:"

# Actors that are no user: the periodic renewal check, and administrators working on the command line.
_SERVICE_ACTORS = {"system": "actor.system", "cli": "actor.administrator", "admin": "actor.administrator"}


def name_sql(table: str, column: str) -> str:
    """Return an SQL expression for the current name of the user that ``table.column`` records as actor, NULL when there is none.

    ``table`` is the alias of a table with a ``tenant_id`` column. The name is
    the display name, or the login name where the display name is empty. The
    expression is NULL for an actor that is no user and for a user who was
    deleted since.
    """
    actor = f"{table}.{column}"
    prefix = len(USER_PREFIX)
    return (
        "(SELECT coalesce(nullif(u.display_name, ''), u.username) FROM users u"
        f" WHERE u.tenant_id = {table}.tenant_id AND left({actor}, {prefix}) = '{USER_PREFIX}' AND u.username = substr({actor}, {prefix + 1}))"
    )


def actor_label(actor: str | None, name: str | None, language: str) -> str:
    """Return the text that names ``actor`` to a reader in ``language``.

    ``name`` is the user's current name as :func:`name_sql` reads it. Without
    it, a user id shows its login name marked as removed, a token id shows
    the token, the scheduler and the command line show what they are, and
    any other id shows as stored. None shows as a dash.
    """
    if actor is None:
        return "–"
    if name:
        return name
    if actor.startswith(USER_PREFIX):
        return translate(language, "actor.removed_user", name=actor.removeprefix(USER_PREFIX))
    if actor.startswith(TOKEN_PREFIX):
        return translate(language, "actor.token", token=actor.removeprefix(TOKEN_PREFIX))
    if actor in _SERVICE_ACTORS:
        return translate(language, _SERVICE_ACTORS[actor])
    return actor
