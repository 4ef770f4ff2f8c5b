"""Contract YAML with line numbers, and errors that name file, line, field, value and what is allowed."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import msgspec.inspect as mi
import yaml

__all__ = ("ContractError", "ContractSource", "source_from_text", "validation_error")

_PATH_TOKEN = re.compile(r"\.([A-Za-z_][\w-]*)|\[(\d+)\]")
_MSGSPEC_PATH = re.compile(r" - at `(\$[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"unknown field `([^`]+)`")
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MONEY_FIELDS = ("amount", "cap", "floor", "rounding")
_EXPONENT_TEXT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


class ContractError(ValueError):
    """A contract file is invalid; the message names the file, the line when known, the field, the value and what is allowed."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        field: str | None = None,
        line: int | None = None,
        value: object = None,
        allowed: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.field = field
        self.line = line
        self.value = value
        self.allowed = allowed


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, problem: str, line: int) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line


class _YamlLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe YAML loader that keeps dates as text and refuses a key written twice in one mapping.

    Dates stay text so that an impossible date fails validation with its field instead of a bare ValueError.
    PyYAML would let the later of two equal keys win without a word, so a duplicated price or date could go unseen.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = getattr(key_node, "value", None)
                if isinstance(key, str) and key in first_line and key_node.tag != "tag:yaml.org,2002:merge":
                    problem = f"duplicate key {key!r} (first on line {first_line[key]}); write each key once"
                    raise _DuplicateKey(problem, key_node.start_mark.line + 1)
                first_line.setdefault(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in _YamlLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_constructor(_TIMESTAMP_TAG, lambda loader, node: loader.construct_scalar(node))


class ContractSource:
    """Contract data with the YAML node tree it came from (when it came from text), to find the value and line of a field path."""

    def __init__(self, file: str, data: Any, root: yaml.Node | None = None) -> None:
        self.file = file
        self.data = data
        self.root = root

    def line_of(self, field_path: str) -> int | None:
        """Return the 1-based line of ``field_path`` (``$.anchors[0].price.amount``) or of its nearest parent."""
        node = self.root
        if node is None:
            return None
        line = node.start_mark.line + 1
        for key, index in _PATH_TOKEN.findall(field_path):
            if key and isinstance(node, yaml.MappingNode):
                node = next((value for name, value in node.value if getattr(name, "value", None) == key), None)
            elif index and isinstance(node, yaml.SequenceNode) and int(index) < len(node.value):
                node = node.value[int(index)]
            else:
                break
            if node is None:
                break
            line = node.start_mark.line + 1
        return line

    def value_at(self, field_path: str) -> Any:
        value = self.data
        for key, index in _PATH_TOKEN.findall(field_path):
            try:
                value = value[key] if key else value[int(index)]
            except (KeyError, IndexError, TypeError):
                return None
        return value

    def error(self, field_path: str, message: str, *, allowed: str | None = None, value: Any = None) -> ContractError:
        """Return the error for ``field_path``, formatted ``file:line: field: message (got value); allowed: ...``."""
        bad_value = value if value is not None else self.value_at(field_path)
        line = self.line_of(field_path)
        text = f"{self.file}:{line}: {field_path}: {message}" if line else f"{self.file}: {field_path}: {message}"
        if bad_value is not None and not isinstance(bad_value, (dict, list)):
            text += f" (got {bad_value!r})"
        if allowed:
            text += f"; allowed: {allowed}"
        return ContractError(text, file=self.file, field=field_path, line=line, value=bad_value, allowed=allowed)


def _allowed_values(kind: type, field_path: str, message: str) -> str | None:
    """Return the allowed values at ``field_path`` of ``kind``: an enumeration's values, or a struct's fields after an unknown one."""

    def unwrap(node: mi.Type) -> mi.Type:
        if isinstance(node, mi.UnionType):
            members = [member for member in node.types if not isinstance(member, mi.NoneType)]
            if len(members) == 1:
                return members[0]
        return node

    node: mi.Type = mi.type_info(kind)
    for key, index in _PATH_TOKEN.findall(field_path):
        node = unwrap(node)
        if key and isinstance(node, mi.StructType):
            field = next((f for f in node.fields if f.encode_name == key), None)
            if field is None:
                return None
            node = field.type
        elif index and isinstance(node, mi.ListType):
            node = node.item_type
        elif key and isinstance(node, mi.DictType):
            node = node.value_type
        else:
            return None
    node = unwrap(node)
    if isinstance(node, mi.LiteralType):
        return ", ".join(str(value) for value in node.values)
    if isinstance(node, mi.StructType) and _UNKNOWN_FIELD.search(message):
        return ", ".join(f.encode_name for f in node.fields)
    return None


def validation_error(source: ContractSource, kind: type, exc: msgspec.ValidationError) -> ContractError:
    """Turn a msgspec type error into a :class:`ContractError` with the field's line, value and allowed values."""
    text = str(exc)
    match = _MSGSPEC_PATH.search(text)
    field_path = match.group(1) if match else "$"
    message = text[: match.start()] if match else text
    allowed = _allowed_values(kind, field_path, message)
    unknown = _UNKNOWN_FIELD.search(message)
    if unknown:
        field_path = f"{field_path}.{unknown.group(1)}"
        message = "unknown field"
    elif message.startswith("Invalid enum value"):
        message = "not one of the allowed values"
    elif "RFC3339 encoded date" in message:
        message = "not a valid calendar date"
        allowed = "a real day written YYYY-MM-DD"
    elif field_path.rsplit(".", 1)[-1] in _MONEY_FIELDS and "Expected `str" in message:
        message = "money and rounding are decimal strings in quotes, because an unquoted number becomes an inexact binary float"
        allowed = "for example '12.00'"
    elif message.startswith(("Expected `int`", "Expected `float`")):
        whole = message.startswith("Expected `int`")
        message = "not a whole number" if whole else "not a number"
        # YAML 1.1 reads 1e30 (no dot) as text, so a number written that way arrives as a string.
        if isinstance(value := source.value_at(field_path), str) and _EXPONENT_TEXT.fullmatch(value.strip()):
            message += "; YAML reads a number with an exponent as text unless it has a dot, as in 1.0e+30"
        allowed = allowed or ("a whole number such as 20240101" if whole else "a number such as 30 or 0.2")
    return source.error(field_path, message, allowed=allowed)


def source_from_text(text: str, file: str) -> ContractSource:
    """Parse YAML (or JSON) text into data and its node tree; a syntax error becomes a :class:`ContractError` with its line."""
    try:
        loader = _YamlLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        finally:
            loader.dispose()
    except _DuplicateKey as exc:
        raise ContractError(f"{file}:{exc.line}: $: {exc.problem}", file=file, field="$", line=exc.line) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark is not None else file
        raise ContractError(f"{where}: $: invalid YAML: {exc}", file=file, field="$", line=mark.line + 1 if mark else None) from exc
    except ValueError as exc:
        # Dates stay text, so only other scalars that PyYAML cannot construct (such as `!!int abc`) get here.
        raise ContractError(f"{file}: $: invalid YAML value: {exc}", file=file, field="$") from exc
    return ContractSource(file, data, root)
