"""An edge box installs without the cloud extra: every edge command must start without Litestar or psycopg."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# Run in a fresh interpreter where importing any cloud-only package fails, as on an edge box.
_BLOCKED_RUNNER = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = ("litestar", "psycopg", "psycopg_pool", "uvicorn", "argon2", "weasyprint", "jinja2", "nacl")

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: not installed on an edge box)")
            return None

    sys.meta_path.insert(0, Block())
    sys.argv = ["valuegate", *sys.argv[1:]]
    from valuegate.cli import main
    main()
    """
)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _BLOCKED_RUNNER, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    "args",
    [
        ("--help",),
        ("edge", "run", "--help"),
        ("edge", "check-config", "--help"),
        ("keys", "--help"),
        ("probe", "--help"),
        ("oee", "--help"),
        ("simulate", "--help"),
        ("verify", "--help"),
    ],
    ids=lambda args: " ".join(args),
)
def test_edge_commands_start_without_cloud_packages(args: tuple[str, ...]) -> None:
    result = _run(*args)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage" in result.stdout


def test_cloud_commands_name_the_missing_extra() -> None:
    result = _run("cloud", "migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/none")
    assert result.returncode == 2
    assert "pip install 'valuegate[cloud]'" in result.stderr
    assert "litestar" in result.stderr
