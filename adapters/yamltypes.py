"""Type-check YAML data against msgspec types item by item, so that one bad value does not hide the others.

``msgspec.convert`` stops at the first error. A file with four mistakes
would then take four runs of the check. :func:`type_check` converts again,
field by field and list item by list item, wherever a conversion fails. It
reports every error it finds and records which paths hold a bad value, so
that the checks that follow can skip those parts and check the rest.
"""

from __future__ import annotations

import types
import typing
from typing import TYPE_CHECKING, Any

import msgspec

from .errors import ConfigIssue

if TYPE_CHECKING:
    from .yamlsource import YamlSource

__all__ = ("TypeCheck", "type_check")


class TypeCheck:
    """The type errors found in some data, and the field paths of the values they are about."""

    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []
        self.bad_paths: list[str] = []

    def add(self, path: str, issue: ConfigIssue) -> None:
        self.issues.append(issue)
        self.bad_paths.append(path)

    def usable(self, path: str) -> bool:
        """Return whether the value at ``path`` has the right type: no error is about it, a part of it, or a value containing it."""
        return not any(_related(path, bad) for bad in self.bad_paths)

    def value(self, path: str, data: Any, kind: Any, default: Any = None) -> Any:
        """Return ``data``, the value at ``path``, converted to ``kind``; ``default`` when it is absent or has a type error."""
        if data is None or not self.usable(path):
            return default
        return msgspec.convert(data, kind)

    def items(self, path: str, data: Any, kind: Any) -> list[tuple[int, Any]]:
        """Return each item of the list ``data`` at ``path`` that has the right type, converted to ``kind``, with its index.

        Items with a type error are left out, so that the checks that follow see only the others.
        """
        if not isinstance(data, list) or any(_related(path, bad) and len(bad) <= len(path) for bad in self.bad_paths):
            return []
        return [(index, msgspec.convert(item, kind)) for index, item in enumerate(data) if self.usable(f"{path}[{index}]")]


def _related(path: str, bad: str) -> bool:
    """Return whether one of the two field paths is the other or lies inside it."""
    if path == bad:
        return True
    shorter, longer = (path, bad) if len(path) < len(bad) else (bad, path)
    return longer.startswith(shorter) and longer[len(shorter)] in ".["


def type_check(source: YamlSource, kind: Any, data: Any, path: str = "$") -> TypeCheck:
    """Check ``data`` (found at ``path`` of ``source``) against the type ``kind``, collecting every independent error."""
    check = TypeCheck()
    _check(source, kind, data, path, check)
    return check


def _check(source: YamlSource, kind: Any, data: Any, path: str, check: TypeCheck) -> None:
    try:
        msgspec.convert(data, kind)
        return
    except msgspec.ValidationError as exc:
        whole = exc
    before = len(check.issues)
    if not _check_parts(source, kind, data, path, check) or len(check.issues) == before:
        # The value cannot be split into parts (a wrong scalar, a wrong tag of a union), or every part is
        # fine and the error is about the whole: report msgspec's own error.
        issue = source.validation_issue(whole, kind, data, prefix=path)
        check.add(issue.field, issue)


def _check_parts(source: YamlSource, kind: Any, data: Any, path: str, check: TypeCheck) -> bool:
    """Check each field, item or value of ``data`` on its own; return False when ``data`` has no parts to check."""
    kind = _without_none(kind, data)
    if isinstance(data, dict):
        struct = _struct_for(kind, data)
        if struct is not None:
            _check_struct(source, struct, data, path, check)
            return True
        if typing.get_origin(kind) is dict:
            _, value_type = typing.get_args(kind)
            for key, value in data.items():
                _check(source, value_type, value, f"{path}.{key}", check)
            return True
        return False
    if isinstance(data, list) and typing.get_origin(kind) is list:
        (item_type,) = typing.get_args(kind)
        for index, item in enumerate(data):
            _check(source, item_type, item, f"{path}[{index}]", check)
        return True
    return False


def _check_struct(source: YamlSource, struct: type[msgspec.Struct], data: dict, path: str, check: TypeCheck) -> None:
    config = struct.__struct_config__
    fields = {field.encode_name: field for field in msgspec.structs.fields(struct)}
    hints = typing.get_type_hints(struct)
    for key in data:
        if key == config.tag_field:
            continue
        if key not in fields and config.forbid_unknown_fields:
            # Reworded and given the allowed field names by validation_issue, as msgspec's own error would be.
            error = msgspec.ValidationError(f"Object contains unknown field `{key}`")
            issue = source.validation_issue(error, struct, data, prefix=path)
            check.add(f"{path}.{key}", issue)
    for name, field in fields.items():
        if name not in data:
            if field.required:
                error = msgspec.ValidationError(f"Object missing required field `{name}`")
                check.add(f"{path}.{name}", source.validation_issue(error, struct, data, prefix=path))
            continue
        _check(source, hints[field.name], data[name], f"{path}.{name}", check)


def _without_none(kind: Any, data: Any) -> Any:
    """Return ``kind`` without its ``None`` member when ``data`` is not None (``X | None`` becomes ``X``)."""
    if typing.get_origin(kind) not in (typing.Union, types.UnionType) or data is None:
        return kind
    members = [member for member in typing.get_args(kind) if member is not type(None)]
    return members[0] if len(members) == 1 else typing.Union[tuple(members)]


def _struct_for(kind: Any, data: dict) -> type[msgspec.Struct] | None:
    """Return the struct type that ``data`` is checked as: ``kind`` itself, or the member of a tagged union its tag selects."""
    if isinstance(kind, type) and issubclass(kind, msgspec.Struct):
        return kind
    if typing.get_origin(kind) not in (typing.Union, types.UnionType):
        return None
    for member in typing.get_args(kind):
        config = getattr(member, "__struct_config__", None)
        if config is not None and config.tag_field is not None and data.get(config.tag_field) == config.tag:
            return member
    return None
