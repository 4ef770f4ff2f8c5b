"""Imports go one way: adapters know nothing of edge or cloud, edge nothing of cloud, cloud only the protocol and kernels."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# folder -> (its import prefix, prefixes it must not import, prefixes exempted from that ban)
RULES = {
    "adapters": ("valuegate.adapters", ["valuegate.edge", "valuegate.cloud", "valuegate.simulators", "valuegate.demo"], []),
    "edge": ("valuegate.edge", ["valuegate.cloud", "valuegate.simulators", "valuegate.demo"], []),
    "simulators": ("valuegate.simulators", ["valuegate.edge", "valuegate.cloud"], []),
    "cloud": (
        "valuegate.cloud",
        ["valuegate.edge", "valuegate.adapters", "valuegate.simulators"],
        ["valuegate.edge.protocol", "valuegate.edge.kernels", "valuegate.edge.methodology"],
    ),
}


def _imports(path: Path, package: str) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            # `from a.b import c` is recorded as a.b.c, so that importing an allowed
            # submodule from its parent package (from valuegate.edge import kernels) passes.
            found += [(node.lineno, f"{name}.{alias.name}") for alias in node.names]
    return found


def _module_package(folder: str, path: Path) -> str:
    prefix = RULES[folder][0]
    relative = path.relative_to(ROOT / folder).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
        return ".".join([prefix, *parts])
    return ".".join([prefix, *parts[:-1]])


@pytest.mark.parametrize("folder", sorted(RULES))
def test_layer_imports_go_one_way(folder: str) -> None:
    _, banned, allowed = RULES[folder]
    violations = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        package = _module_package(folder, path)
        for line, name in _imports(path, package):
            if any(name == b or name.startswith(b + ".") for b in banned) and not any(name == a or name.startswith(a + ".") for a in allowed):
                violations.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert violations == []


def test_rules_catch_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from valuegate.cloud import ingest\nfrom ..protocol import voucher\n")
    names = [name for _, name in _imports(sample, "valuegate.edge.kernels")]
    assert names == ["valuegate.cloud.ingest", "valuegate.edge.protocol.voucher"]
