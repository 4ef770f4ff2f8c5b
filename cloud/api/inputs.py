"""Rejection of request text that contains control characters, before any of it reaches the database."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Any

import msgspec
from litestar import Request
from litestar.exceptions import HTTPException, ValidationException

__all__ = ("CONTROL_CHARACTER", "SingleLine", "control_character_errors", "reject_control_characters", "check_request")

# C0 control characters, DEL and the C1 control characters U+0080 to U+009F (NEL among them), except the tab, which a
# user can paste into a text input. PostgreSQL cannot store U+0000 in text at all, a browser's single-line input does
# not let a user type the others, and NEL (U+0085) breaks a line for str.splitlines and many text viewers.
CONTROL_CHARACTER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")

# The same set as a msgspec pattern for JSON bodies. A negative lookahead is used because "^[^...]*$" would accept a
# trailing newline: Python's "$" also matches just before a final "\n". The lookahead reads the same in Python and in
# the ECMA dialect of JSON Schema, so the published OpenAPI schema stays correct.
SINGLE_LINE_PATTERN = r"^(?![\s\S]*[\x00-\x08\x0a-\x1f\x7f-\x9f])"

SingleLine = Annotated[str, msgspec.Meta(pattern=SINGLE_LINE_PATTERN)]
"""A one-line text value of a JSON body: no control character but the tab."""


def _code_point(character: str) -> str:
    return f"U+{ord(character):04X}"


def control_character_errors(values: Iterable[tuple[str, Any]], source: str) -> list[dict[str, str]]:
    """Return one ValidationException ``extra`` entry for each of ``values`` (name, value) whose text has a control character.

    Each entry has the ``kind`` "control" and names the first such character as ``U+XXXX`` in its ``character``.
    """
    errors = []
    for name, value in values:
        if not isinstance(value, str) or (found := CONTROL_CHARACTER.search(value)) is None:
            continue
        character = _code_point(found.group())
        errors.append({"key": name, "source": source, "kind": "control", "character": character, "message": f"contains the control character {character}"})
    return errors


async def reject_control_characters(request: Request[Any, Any, Any]) -> None:
    """Raise ValidationException when a path or query parameter of the request contains a control character.

    It is a ``before_request`` hook of the API router: guards have run, and no handler or database query has.
    """
    errors = control_character_errors(request.path_params.items(), "path")
    errors += control_character_errors(request.query_params.multi_items(), "query")
    if errors:
        raise ValidationException("a parameter contains a control character", extra=errors)


def _json_media_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def check_request(request: Request[Any, Any, Any]) -> None:
    """Reject a body that is not declared as JSON with 415, then control characters in parameters (see :func:`reject_control_characters`).

    Every API body is JSON. Without this check Litestar parses any body as JSON whatever its Content-Type declares.
    """
    declared = request.headers.get("content-type")
    has_body = request.headers.get("content-length", "0") not in ("", "0") or "transfer-encoding" in request.headers
    if request.method in ("POST", "PUT", "PATCH") and has_body and not _json_media_type(declared or ""):
        got = f"{declared!r}" if declared else "none"
        raise HTTPException(status_code=415, detail=f"the request body must be JSON; send it with Content-Type: application/json (got {got})")
    await reject_control_characters(request)
