"""REST API under /api/v1 (Litestar controllers)."""

from __future__ import annotations

from litestar import Router
from litestar.di import Provide

from .contracts import ContractController, VoucherController
from .deps import provide_conn
from .inputs import check_request
from .ops import HealthController, MachineController, metrics_endpoint
from .packages import PackageController
from .registry import RegistryController
from .users import SessionController, UserController

__all__ = ("API_PREFIX", "api_router", "metrics_endpoint")

API_PREFIX = "/api/v1"


def api_router() -> Router:
    """Return the router of every /api/v1 endpoint."""
    return Router(
        path=API_PREFIX,
        route_handlers=[HealthController, RegistryController, ContractController, VoucherController, MachineController, PackageController,
                        UserController, SessionController],
        dependencies={"conn": Provide(provide_conn)},
        before_request=check_request,
    )
