"""Exceptions raised by adapters, carrying what failed as attributes."""

from __future__ import annotations

from pathlib import Path

__all__ = ("ConfigError", "ConfigIssue")


class ConfigIssue:
    """One problem in a configuration file: where it is, what is wrong, and what is allowed."""

    __slots__ = ("file", "line", "field", "value", "message", "allowed")

    def __init__(
        self,
        file: str | Path,
        field: str,
        message: str,
        *,
        line: int | None = None,
        value: object = None,
        allowed: str | None = None,
    ) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.value = value
        self.message = message
        self.allowed = allowed

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        text = f"{where}: {self.field}: {self.message}"
        if self.value is not None:
            text += f" (got {self.value!r})"
        if self.allowed:
            text += f"; allowed: {self.allowed}"
        return text


class ConfigError(ValueError):
    """A configuration file is invalid; ``issues`` lists every problem found, not only the first."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))
