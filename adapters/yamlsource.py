"""Load YAML with line numbers, so that validation errors can point at the offending line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi
import yaml

from .errors import ConfigError, ConfigIssue
from .yamltypes import TypeCheck, type_check

__all__ = ("YamlSource", "allowed_values", "load_yaml")

T = TypeVar("T")

_PATH_TOKEN = re.compile(r"\.([A-Za-z_@][\w@-]*)|\[(\d+)\]")
_MSGSPEC_PATH = re.compile(r" - at `(\$[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
# msgspec's "Invalid enum value 'ABDC'": the value is dropped, because the issue shows it as (got ...).
_INVALID_VALUE = re.compile(r"^(Invalid (?:enum )?value) .+$", re.DOTALL)
_NOT_TEXT = re.compile(r"^Expected `str`, got `(bool|int|float|null)`$")


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


# libyaml's parser when PyYAML was built with it: about ten times faster on large tag maps.
class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML loader that rejects a key written twice in one mapping, where PyYAML would let the later one win unseen."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = getattr(key_node, "value", None)
                if isinstance(key, str) and key in first_line and key_node.tag != "tag:yaml.org,2002:merge":
                    raise _DuplicateKey(f"duplicate key {key!r} (first on line {first_line[key]}); write each key once", key_node.start_mark.line + 1)
                first_line.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def _syntax_issue(path: Path, text: str, exc: yaml.YAMLError) -> ConfigIssue:
    """Return the issue of a YAML syntax error at its line, naming a tab when one caused it."""
    if isinstance(exc, _DuplicateKey):
        return ConfigIssue(path, "$", exc.problem, line=exc.line)
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return ConfigIssue(path, "$", f"invalid YAML: {exc}")
    lines = text.splitlines()
    row = lines[mark.line] if mark.line < len(lines) else ""
    problem = getattr(exc, "problem", None) or str(exc)
    if "\t" in row[: mark.column + 1] or "tab" in problem:
        column = row.find("\t") + 1 if "\t" in row else mark.column + 1
        return ConfigIssue(path, "$", f"invalid YAML: a tab character at column {column}; indent YAML with spaces only", line=mark.line + 1)
    return ConfigIssue(path, "$", f"invalid YAML: {problem} (column {mark.column + 1})", line=mark.line + 1)


def _resolve_union(node: mi.Type, value: Any) -> mi.Type:
    """Pick the member of a union that ``value`` selects: the tagged struct named by its tag, or the non-None type."""
    if not isinstance(node, mi.UnionType):
        return node
    members = [member for member in node.types if not isinstance(member, mi.NoneType)]
    if len(members) == 1:
        return _resolve_union(members[0], value)
    tagged = [member for member in members if isinstance(member, mi.StructType) and member.tag_field]
    if isinstance(value, dict) and tagged:
        for member in tagged:
            if value.get(member.tag_field) == member.tag:
                return member
    return node


def _union_tags(node: mi.Type) -> list[str]:
    if not isinstance(node, mi.UnionType):
        return []
    return [str(member.tag) for member in node.types if isinstance(member, mi.StructType) and member.tag_field]


def allowed_values(kind: type, field_path: str, data: Any, message: str) -> str | None:
    """Return the allowed values at ``field_path`` of ``kind`` for a validation ``message``, or None.

    Covers enumerations (``Literal``), the tags of tagged unions and the field
    names of a struct that got an unknown field.
    """
    node: mi.Type = mi.type_info(kind)
    value = data
    tokens = _PATH_TOKEN.findall(field_path)
    for position, (key, index) in enumerate(tokens):
        node = _resolve_union(node, value)
        if key:
            if isinstance(node, mi.UnionType) and position == len(tokens) - 1:
                return ", ".join(_union_tags(node)) or None
            if isinstance(node, mi.StructType):
                field = next((f for f in node.fields if f.encode_name == key), None)
                if field is None:
                    return None
                node = field.type
            elif isinstance(node, mi.DictType):
                node = node.value_type
            else:
                return None
            value = value.get(key) if isinstance(value, dict) else None
        else:
            if not isinstance(node, (mi.ListType, mi.TupleType, mi.VarTupleType)):
                return None
            node = node.item_type if not isinstance(node, mi.TupleType) else node.item_types[0]
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
    node = _resolve_union(node, value)
    if isinstance(node, mi.UnionType):
        literal = [m for m in node.types if isinstance(m, mi.LiteralType)]
        if literal:
            return ", ".join(str(v) for v in literal[0].values)
        missing = _MISSING_FIELD.search(message)
        if "Invalid value" in message or missing:
            return ", ".join(_union_tags(node)) or None
        return None
    if isinstance(node, mi.LiteralType):
        return ", ".join(str(v) for v in node.values)
    if isinstance(node, mi.StructType) and _UNKNOWN_FIELD.search(message):
        return ", ".join(f.encode_name for f in node.fields)
    return None


class YamlSource:
    """A parsed YAML file together with its node tree, for looking up the line of a field path."""

    def __init__(self, path: Path, data: Any, root: yaml.Node | None) -> None:
        self.path = path
        self.data = data
        self._root = root

    def _node_at(self, field_path: str) -> tuple[yaml.Node | None, bool]:
        """Return the node of ``field_path`` or of its nearest parent, and whether the path was found whole."""
        node = self._root
        for key, index in _PATH_TOKEN.findall(field_path):
            if isinstance(node, yaml.MappingNode) and key:
                match = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
                if match is None:
                    return node, False
                node = match
            elif isinstance(node, yaml.SequenceNode) and index:
                position = int(index)
                if position >= len(node.value):
                    return node, False
                node = node.value[position]
            else:
                return node, False
        return node, True

    def line_of(self, field_path: str) -> int | None:
        """Return the 1-based line of ``field_path`` (``$.tags[2].order``), or of its nearest parent."""
        node, _ = self._node_at(field_path)
        return node.start_mark.line + 1 if node is not None else None

    def plain_scalar(self, field_path: str) -> str | None:
        """Return the text of the unquoted scalar at ``field_path`` as written in the file, or None."""
        node, found = self._node_at(field_path)
        # A plain scalar has style None in PyYAML's Python parser and "" in libyaml's.
        if found and isinstance(node, yaml.ScalarNode) and not node.style:
            return str(node.value)
        return None

    def value_at(self, field_path: str) -> Any:
        value = self.data
        for key, index in _PATH_TOKEN.findall(field_path):
            try:
                value = value[key] if key else value[int(index)]
            except (KeyError, IndexError, TypeError):
                return None
        return value

    def issue(self, field_path: str, message: str, *, allowed: str | None = None, value: Any = None) -> ConfigIssue:
        shown = value if value is not None else self.value_at(field_path)
        return ConfigIssue(self.path, field_path, message, line=self.line_of(field_path), value=shown, allowed=allowed)

    def convert(self, kind: type[T], *, subset: str | None = None, prefix: str = "$") -> T:
        """Convert the data (or the one top-level key ``subset`` of it) to ``kind``.

        Type errors become a :class:`ConfigError` that lists each of them with its
        line, the bad value and, for enumerations, tags and unknown fields, the
        allowed values.
        ``prefix`` is the field path of the data when it is part of a larger file.
        """
        data = self.value_at(prefix)
        if subset is not None:
            data = {subset: data.get(subset)} if isinstance(data, dict) else data
        try:
            return msgspec.convert(data, kind)
        except msgspec.ValidationError as exc:
            raise ConfigError(self.type_check(kind, prefix=prefix, data=data).issues) from exc

    def type_check(self, kind: Any, *, prefix: str = "$", data: Any = None) -> TypeCheck:
        """Return every type error of the data at ``prefix`` (or of ``data``, found there) against ``kind``, item by item."""
        return type_check(self, kind, self.value_at(prefix) if data is None else data, prefix)

    def validation_issue(self, exc: msgspec.ValidationError, kind: type, data: Any, *, prefix: str = "$") -> ConfigIssue:
        """Turn a msgspec validation error on ``data`` (found at ``prefix``) into an issue naming the allowed values."""
        text = str(exc)
        match = _MSGSPEC_PATH.search(text)
        local_path = match.group(1) if match else "$"
        message = text[: match.start()] if match else text
        allowed = allowed_values(kind, local_path, data, message)
        field_path = prefix + local_path[1:]
        unknown = _UNKNOWN_FIELD.search(message)
        if unknown:
            field_path = f"{field_path}.{unknown.group(1)}"
        missing = _MISSING_FIELD.search(message)
        if missing:
            # Name the absent field; the object that lacks it can be the whole file, too long to print.
            where = "the file" if field_path == "$" else field_path
            issue = self.issue(field_path, f"required field `{missing.group(1)}` is missing; add it to {where}", allowed=allowed)
            issue.value = None
            return issue
        invalid = _INVALID_VALUE.match(message)
        if invalid:
            message = invalid.group(1)
        written = self.plain_scalar(field_path)
        not_text = _NOT_TEXT.match(message)
        if not_text and written is not None:
            # YAML 1.1 reads off, no, yes and on as booleans, ~ as null and 0123 as a number.
            kind = {"bool": "a boolean", "null": "null"}.get(not_text.group(1), "a number")
            message += f": YAML reads {written} without quotes as {kind}; write it in quotes, \"{written}\""
        return self.issue(field_path, message, allowed=allowed)


def load_yaml(path: str | Path) -> YamlSource:
    """Read a YAML file, raising :class:`ConfigError` with the line of a syntax error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, "$", f"cannot read the file: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        message = f"the file is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} cannot be decoded); save it as UTF-8"
        raise ConfigError([ConfigIssue(path, "$", message, line=line)]) from exc
    try:
        # One parse gives both the node tree (for line numbers) and the data built from it.
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError([_syntax_issue(path, text, exc)]) from exc
    return YamlSource(path, data, root)
