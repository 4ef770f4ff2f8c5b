"""Route handlers of the web UI, mounted by the cloud application."""

from __future__ import annotations

route_handlers: list[object] = []
