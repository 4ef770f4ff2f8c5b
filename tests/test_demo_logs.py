"""The demo's console output: a traceback names the code, never the values of its frames' locals, and no password is printed."""

from __future__ import annotations

import structlog

from valuegate.demo.logs import configure_demo_logging


def test_traceback_hides_locals(capsys) -> None:
    configure_demo_logging(verbose=False)
    try:
        cookie = "vg_session=secret-cookie-value"
        raise RuntimeError(f"failed with {len(cookie)} characters")
    except RuntimeError:
        structlog.get_logger("test").exception("request_failed")
    finally:
        structlog.reset_defaults()
    written = capsys.readouterr().err
    assert "request_failed" in written
    assert "RuntimeError: failed with 30 characters" in written
    assert "secret-cookie-value" not in written


def test_demo_quantities_keep_their_digits_and_group_thousands() -> None:
    from valuegate.demo.render import _quantity

    minutes = {"metric": "unplanned_downtime_rate", "avoided_minutes": "-1213.084628"}
    points = {"metric": "availability_points", "points_gained": "55.444643"}
    labels = {"minutes": "分钟", "points": "点"}
    assert _quantity(minutes, labels) == "-1,213.084628 分钟"
    assert _quantity(points, labels) == "55.444643 点"


def test_printed_database_hides_password() -> None:
    from valuegate.demo.cli import _masked

    assert _masked("postgresql://valuegate@127.0.0.1:5432/valuegate") == "postgresql://valuegate@127.0.0.1:5432/valuegate"
    masked = _masked("postgresql://clerk:s3cret@127.0.0.1:5432/erp")
    assert "s3cret" not in masked
    assert "password=***" in masked
    assert "host=127.0.0.1" in masked
