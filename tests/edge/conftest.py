"""Fixtures of the edge tests that need the cloud side: a migrated PostgreSQL database for the product's ingest."""

from __future__ import annotations

import pytest

from valuegate.cloud import db


@pytest.fixture
def cloud_dsn(database: str) -> str:
    db.migrate(database)
    return database
