"""App assembly of the REST gateway: OpenAI ``/v1`` routes and Xinference's
model-management routes.

:func:`create_app` builds the FastAPI app for a supervisor address from the route tables
of :mod:`xinference.api.routers` (one module per area), bound to one
:class:`~xinference.api.gateway.RESTfulAPI` (supervisor ref, cached model refs: a request
talks to its model process directly). Errors are JSON with both Xinference's ``detail``
and OpenAI's ``error`` object (:mod:`xinference.api.errors`).
"""

from __future__ import annotations

from fastapi import FastAPI

from .. import __version__
from .errors import install_error_handlers
from .gateway import RESTfulAPI
from .routers import all_routes


def create_app(supervisor_address: str, auth=None) -> FastAPI:
    """The FastAPI app serving the supervisor at ``supervisor_address`` (xoscar address).

    ``auth``: an :class:`~xinference.api.auth.AuthService` (``--auth-config``); every route
    then needs a credential with the scope of its row (:class:`~xinference.api.auth.
    AuthMiddleware`). HTTP metrics are counted unless ``XINFERENCE_DISABLE_METRICS``."""
    from ..core.metrics import HTTPMetrics, HTTPMetricsMiddleware, metrics_enabled
    from .auth import AuthMiddleware

    app = FastAPI(title="Xinference", version=__version__)
    api = RESTfulAPI(supervisor_address)
    api.auth = auth
    api.http_metrics = HTTPMetrics() if metrics_enabled() else None
    app.state.api = api
    routes = all_routes(api)
    for route, handler in routes:
        app.add_api_route(route.path, handler, methods=[route.method])
    app.state.routes = [r for r, _ in routes]  # with their scopes, for auth
    if auth is not None:
        app.add_middleware(AuthMiddleware, fastapi_app=app, service=auth,
                           scopes={(r.method, r.path): r.scope for r in app.state.routes})
    if api.http_metrics is not None:  # outermost: refused requests are counted too
        app.add_middleware(HTTPMetricsMiddleware, fastapi_app=app,
                           metrics=api.http_metrics)
    install_error_handlers(app)
    return app
