"""App assembly of the REST gateway: OpenAI ``/v1`` routes and Xinference's
model-management routes.

:func:`create_app` builds the FastAPI app for a supervisor address from the route tables
of :mod:`xinference.api.routers` (one module per area), bound to one
:class:`~xinference.api.gateway.RESTfulAPI` (supervisor ref, cached model refs: a request
talks to its model process directly). Errors are JSON with both Xinference's ``detail``
and OpenAI's ``error`` object (:mod:`xinference.api.errors`).
"""

from __future__ import annotations

from typing import Optional

from fastapi import FastAPI

from .. import __version__
from .errors import install_error_handlers
from .gateway import RESTfulAPI
from .routers import all_routes


def create_app(supervisor_address: str, auth=None,
               bind_host: Optional[str] = None) -> FastAPI:
    """The FastAPI app serving the supervisor at ``supervisor_address`` (xoscar address).

    ``auth``: an :class:`~xinference.api.auth.AuthService` (``--auth-config``); every route
    then needs a credential with the scope of its row (:class:`~xinference.api.auth.
    AuthMiddleware`). HTTP metrics are counted unless ``XINFERENCE_DISABLE_METRICS``.

    Every request passes the guards of :mod:`xinference.api.limits`: the body-size limit
    (``$XINFERENCE_MAX_BODY_BYTES``) and the ``Host`` check: with ``bind_host`` a loopback
    address, only loopback host names are answered unless ``$XINFERENCE_ALLOWED_HOSTS``
    names others (with ``bind_host`` None or not loopback, only that variable restricts).
    """
    from ..core.metrics import HTTPMetrics, HTTPMetricsMiddleware, metrics_enabled
    from .auth import AuthMiddleware
    from .limits import (
        BodyLimitMiddleware,
        HostCheckMiddleware,
        LoginRateLimiter,
        allowed_hosts_from_env,
        is_loopback,
    )

    app = FastAPI(title="Xinference", version=__version__)
    api = RESTfulAPI(supervisor_address)
    api.auth = auth
    api.http_metrics = HTTPMetrics() if metrics_enabled() else None
    api.login_limiter = LoginRateLimiter()
    app.state.api = api
    routes = all_routes(api)
    for route, handler in routes:
        app.add_api_route(route.path, handler, methods=[route.method])
    app.state.routes = [r for r, _ in routes]  # with their scopes, for auth
    if auth is not None:
        app.add_middleware(AuthMiddleware, fastapi_app=app, service=auth,
                           scopes={(r.method, r.path): r.scope for r in app.state.routes})
    app.add_middleware(BodyLimitMiddleware)
    allowed = allowed_hosts_from_env()
    loopback = bind_host is not None and is_loopback(bind_host.strip("[]"))
    if loopback or allowed:
        app.add_middleware(HostCheckMiddleware, allowed=allowed or (),
                           loopback_only=loopback)
    if api.http_metrics is not None:  # outermost: refused requests are counted too
        app.add_middleware(HTTPMetricsMiddleware, fastapi_app=app,
                           metrics=api.http_metrics)
    install_error_handlers(app)
    return app
