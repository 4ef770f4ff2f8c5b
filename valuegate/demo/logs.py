"""Log set-up of the demo: component events on stderr, warnings and errors only unless verbose."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_demo_logging(*, verbose: bool) -> None:
    """Send structlog and stdlib log events to stderr; INFO and up when ``verbose``, else WARNING and up."""
    level = logging.INFO if verbose else logging.WARNING
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # A plain traceback: the default one lists each frame's locals, which hold session cookies and form bodies.
            structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # asyncua and pymodbus log every reconnect attempt and packet at INFO; the demo shows their warnings only.
    for name in ("asyncua", "pymodbus", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
    # WeasyPrint warns about every SVG styling property it ignores while drawing PDF charts.
    for name in ("weasyprint", "fontTools"):
        logging.getLogger(name).setLevel(level if verbose else logging.ERROR)
