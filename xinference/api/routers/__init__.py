"""Route tables of the REST gateway, one module per area.

Each area module defines a :class:`Router` subclass: its handlers are methods, bound to the
shared :class:`~xinference.api.gateway.RESTfulAPI` (supervisor refs, cached model refs,
``_infer``; errors map to responses in :mod:`xinference.api.errors`), and its ``ROUTES`` table lists ``(method, path, handler name, scope)``. ``scope``
is the permission a caller needs when auth is on (Xinference's names: ``models:list``,
``models:read``, ``models:start``, ``models:stop``, ``models:register``,
``models:unregister``, ``cache:list``, ``cache:delete``, ``admin``); ``None`` marks a public
route, allowed only for the paths in :data:`PUBLIC_PATHS` (checked by :func:`all_routes`, so
a route without a scope fails at start-up instead of being left open).

A new area adds a module here and its name to :data:`AREAS`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional, Tuple

if TYPE_CHECKING:  # pragma: no cover
    from ..gateway import RESTfulAPI

#: area modules of this package, in the order their routes are added
AREAS = ["admin", "models", "cluster", "llm", "embeddings", "audio", "images", "videos",
         "auth", "metrics", "virtualenvs"]

#: the only paths that may be served without a scope (with auth on, everything else needs
#: a credential holding the route's scope; see :mod:`xinference.api.auth`)
PUBLIC_PATHS = {"/status", "/v1/cluster/version", "/token", "/v1/cluster/auth", "/metrics"}

# The web UI (routers/ui.py): its page and static files hold no data and are public; its
# API calls carry the user's key.
AREAS.append("ui")
PUBLIC_PATHS |= {"/", "/ui", "/ui/{path:path}"}


@dataclass(frozen=True)
class Route:
    """One route: HTTP ``method``, ``path`` (FastAPI syntax), the :class:`Router` method
    named ``handler``, and the ``scope`` a caller needs (None: public)."""

    method: str
    path: str
    handler: str
    scope: Optional[str]


class Router:
    """Base of the area routers: handlers reach the shared gateway as ``self.api``."""

    ROUTES: List[Route] = []

    def __init__(self, api: "RESTfulAPI"):
        self.api = api


def all_routes(api: "RESTfulAPI") -> List[Tuple[Route, object]]:
    """Every ``(route, bound handler)`` of every area, for ``api``.

    Raises:
        RuntimeError: a route without a scope outside :data:`PUBLIC_PATHS`, a handler name
            its router lacks, or two areas serving the same method and path.
    """
    out, seen = [], set()
    for area in AREAS:
        module = importlib.import_module(f"{__name__}.{area}")
        for cls in module.ROUTERS:
            router = cls(api)
            for route in cls.ROUTES:
                if route.scope is None and route.path not in PUBLIC_PATHS:
                    raise RuntimeError(f"route {route.method} {route.path} has no scope")
                key = (route.method, route.path)
                if key in seen:
                    raise RuntimeError(f"route {route.method} {route.path} is defined twice")
                seen.add(key)
                handler = getattr(router, route.handler, None)
                if handler is None:
                    raise RuntimeError(f"{cls.__name__} has no handler {route.handler!r}")
                out.append((route, handler))
    return out
