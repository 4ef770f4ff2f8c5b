"""The demo's console log: a traceback names the code, never the values of its frames' locals."""

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
