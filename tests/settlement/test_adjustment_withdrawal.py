"""Withdrawing non-routine adjustments, one stored copy per submission, and the migration that folds earlier copies (real PostgreSQL)."""

from __future__ import annotations

import psycopg
import pytest

from tests.migration_steps import migrate_before
from valuegate.cloud import db
from valuegate.cloud.db import UTC_OPTIONS

pytestmark = pytest.mark.postgres


def test_migration_withdraws_later_copies(database: str) -> None:
    """Copies stored before the unique index stay as rows; every copy after the first open one is withdrawn, other adjustments untouched."""
    migrate_before(database, "0059")
    with psycopg.connect(database, autocommit=True, options=UTC_OPTIONS) as conn:
        insert = (
            "INSERT INTO nonroutine_adjustments (tenant_id, contract_id, anchor_id, kind, first_date, last_date, reason, created_by)"
            " VALUES (%s, 'C-1', %s, 'exclude_period', %s, %s, %s, 'user:csm')"
        )
        rows = [
            ("acme", "line-oee", "2024-05-08", "2024-05-08", "rebuild"),  # 1: kept
            ("acme", "line-oee", "2024-05-08", "2024-05-08", "rebuild"),  # 2: copy of 1
            ("acme", None, "2024-05-08", "2024-05-08", "rebuild"),  # 3: all anchors, another adjustment
            ("acme", "line-oee", "2024-05-08", "2024-05-08", "rebuild"),  # 4: copy of 1
            ("acme", None, "2024-05-08", "2024-05-08", "rebuild"),  # 5: copy of 3
            ("globex", "line-oee", "2024-05-08", "2024-05-08", "rebuild"),  # 6: another tenant
            ("acme", "line-oee", "2024-05-08", "2024-05-09", "rebuild"),  # 7: other dates
        ]
        for row in rows:
            conn.execute(insert, row)

    assert db.migrate(database)[0] == "0059_adjustment_withdrawal"
    with psycopg.connect(database, options=UTC_OPTIONS) as conn:
        state = conn.execute("SELECT id, withdrawn_by, withdraw_reason FROM nonroutine_adjustments ORDER BY id").fetchall()
        assert state == [
            (1, None, None), (2, "migration", "duplicate of NRA-1"), (3, None, None), (4, "migration", "duplicate of NRA-1"),
            (5, "migration", "duplicate of NRA-3"), (6, None, None), (7, None, None),
        ]
        # The index now refuses a second open copy.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(insert, ("acme", "line-oee", "2024-05-08", "2024-05-08", "rebuild"))
