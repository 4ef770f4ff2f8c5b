"""Route handlers of the web UI, mounted by the cloud application."""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide

from valuegate.cloud.api.deps import provide_conn

from .auth_views import login_page, login_submit, logout_submit, root
from .contract_views import add_adjustment, anchor_page, contract_page, contracts_page, machine_page, withdraw_adjustment
from .pages import html_exception_handlers, reject_control_characters
from .renewal_views import check_page, check_renewal, deliver_package, package_archive, package_member, package_page, set_webhook
from .settlement_views import approve_run, bundle_download, discard_run, export_csv, export_pdf, run_invoice, run_page

__all__ = ("route_handlers", "web_router")


def web_router() -> Router:
    """Return the router of every page; its errors render as HTML pages, and anonymous callers go to /login."""
    return Router(
        path="/",
        route_handlers=[
            root, login_page, login_submit, logout_submit,
            contracts_page, contract_page, anchor_page, machine_page, add_adjustment, withdraw_adjustment,
            run_invoice, run_page, approve_run, discard_run, export_csv, export_pdf, bundle_download,
            check_renewal, check_page, package_page, deliver_package, package_archive, package_member, set_webhook,
        ],
        dependencies={"conn": Provide(provide_conn)},
        exception_handlers=html_exception_handlers,
        before_request=reject_control_characters,
        include_in_schema=False,
    )


route_handlers: list[object] = [web_router()]
