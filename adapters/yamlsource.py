"""Load YAML with line numbers, so that validation errors can point at the offending line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import yaml

from .errors import ConfigError, ConfigIssue

__all__ = ("YamlSource", "load_yaml")

T = TypeVar("T")

_PATH_TOKEN = re.compile(r"\.([A-Za-z_@][\w@-]*)|\[(\d+)\]")
_MSGSPEC_PATH = re.compile(r" - at `(\$[^`]*)`$")


class YamlSource:
    """A parsed YAML file together with its node tree, for looking up the line of a field path."""

    def __init__(self, path: Path, data: Any, root: yaml.Node | None) -> None:
        self.path = path
        self.data = data
        self._root = root

    def line_of(self, field_path: str) -> int | None:
        """Return the 1-based line of ``field_path`` (``$.tags[2].order``), or of its nearest parent."""
        node = self._root
        line = node.start_mark.line + 1 if node is not None else None
        for key, index in _PATH_TOKEN.findall(field_path):
            if isinstance(node, yaml.MappingNode) and key:
                match = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
                if match is None:
                    break
                node = match
            elif isinstance(node, yaml.SequenceNode) and index:
                position = int(index)
                if position >= len(node.value):
                    break
                node = node.value[position]
            else:
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

    def issue(self, field_path: str, message: str, *, allowed: str | None = None, value: Any = None) -> ConfigIssue:
        shown = value if value is not None else self.value_at(field_path)
        return ConfigIssue(self.path, field_path, message, line=self.line_of(field_path), value=shown, allowed=allowed)

    def convert(self, kind: type[T]) -> T:
        """Convert the data to ``kind``; a type error becomes a :class:`ConfigError` with its line."""
        try:
            return msgspec.convert(self.data, kind)
        except msgspec.ValidationError as exc:
            text = str(exc)
            match = _MSGSPEC_PATH.search(text)
            field_path = match.group(1) if match else "$"
            message = text[: match.start()] if match else text
            raise ConfigError([self.issue(field_path, message)]) from exc


def load_yaml(path: str | Path) -> YamlSource:
    """Read a YAML file, raising :class:`ConfigError` with the line of a syntax error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(path, "$", f"cannot read the file: {exc.strerror}")]) from exc
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue(path, "$", f"invalid YAML: {exc}", line=line)]) from exc
    return YamlSource(path, data, root)
