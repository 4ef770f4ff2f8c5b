"""Server-rendered web UI for customer-success managers, finance and auditors (zh-CN and English)."""

from __future__ import annotations

from importlib import resources
from typing import Any

__all__ = ("configure",)


def configure(app_config: Any) -> None:
    """Add what the pages need to the cloud app's ``AppConfig``: the stylesheet under /static, the renewal check and HTML 404 pages.

    The renewal check's lifespan comes after the app's own, so the connection pool is open when it starts.
    """
    from litestar.exceptions import HTTPException, MethodNotAllowedException, NotFoundException
    from litestar.static_files import create_static_files_router

    from valuegate.cloud.renewal.loop import renewal_lifespan

    from .pages import unmatched_route_handler

    folder = resources.files("valuegate.cloud.web").joinpath("static")
    app_config.route_handlers.append(create_static_files_router(path="/static", directories=[str(folder)], name="web:static", include_in_schema=False))
    app_config.lifespan.append(renewal_lifespan)
    # A path that matches no route never reaches the web router's own handlers, so it is handled here: as a page unless it is an API path.
    unmatched = unmatched_route_handler(app_config.exception_handlers.get(HTTPException))
    app_config.exception_handlers[NotFoundException] = unmatched
    app_config.exception_handlers[MethodNotAllowedException] = unmatched
