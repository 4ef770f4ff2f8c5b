"""Fixtures of the edge tests: a migrated database for the product's ingest, a broker that requires a password, a shared numba cache."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from valuegate.cloud import db
from valuegate.services import MosquittoServer

from .helpers import GATEWAY

MQTT_PASSWORD = "s3cret-pw"


@pytest.fixture
def cloud_dsn(database: str) -> str:
    db.migrate(database)
    return database


@pytest.fixture
def password_broker() -> Iterator[MosquittoServer]:
    folder = Path(tempfile.mkdtemp(prefix="valuegate-passwd-"))
    folder.chmod(0o755)
    passwords = folder / "passwords"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), GATEWAY, MQTT_PASSWORD], check=True, capture_output=True)
    passwords.chmod(0o644)
    try:
        with MosquittoServer(extra_config=[f"password_file {passwords}", "allow_anonymous false"]) as broker:
            yield broker
    finally:
        shutil.rmtree(folder, ignore_errors=True)
