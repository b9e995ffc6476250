"""Error mapping and response classes of the REST gateway.

Every error leaves the gateway as JSON holding both Xinference's ``detail`` and OpenAI's
``error`` object (:func:`error_body`). :func:`exception_to_response` maps an exception,
possibly raised in another process, to such a response; :func:`install_error_handlers`
registers the mapping on a FastAPI app. :class:`OrjsonResponse` renders inference results.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import XinferenceError

logger = logging.getLogger(__name__)


class OrjsonResponse(JSONResponse):
    """A JSON response rendered with orjson (UTF-8, shortest float repr; numpy arrays as
    JSON arrays, float32 ones with float32's shortest repr). Inference results are returned
    this way, bypassing FastAPI's ``jsonable_encoder``: an embedding of 384 floats costs the
    API process a fraction of what the json module takes."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class ClientDisconnected(Exception):
    """The HTTP client went away before its answer was ready."""


def error_body(status: int, message: str, error_type: str, param: Optional[str] = None):
    """``{"detail": msg, "error": {"message", "type", "param", "code"}}``: readable by
    Xinference clients (``detail``) and OpenAI clients (``error``)."""
    return {"detail": message,
            "error": {"message": message, "type": error_type, "param": param, "code": status}}


def error_response(status: int, message: str, error_type: str = "invalid_request_error",
                   param: Optional[str] = None) -> JSONResponse:
    """A :class:`JSONResponse` of :func:`error_body` with HTTP status ``status``."""
    return JSONResponse(error_body(status, message, error_type, param), status_code=status)


def connection_error(e: BaseException) -> bool:
    """Whether ``e`` says the process or actor called is gone (xoscar ``ServerClosed`` or
    ``ActorNotExist``, a refused or reset connection, end of stream)."""
    from xoscar.errors import ActorNotExist, ServerClosed

    return isinstance(e, (ServerClosed, ActorNotExist, ConnectionError, EOFError))


def exception_to_response(e: BaseException) -> JSONResponse:
    """Map an exception (possibly raised in another process) to an error response:
    :class:`~xinference.errors.XinferenceError` by its status (401 with
    ``WWW-Authenticate: Bearer``), :class:`ClientDisconnected` 499, a gone process 503,
    anything else 500 (logged)."""
    if isinstance(e, XinferenceError):
        resp = error_response(e.status_code, e.message, e.error_type)
        if e.status_code == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    if isinstance(e, ClientDisconnected):  # nobody reads it; 499 as nginx logs it
        return error_response(499, "Client closed the request", "client_closed_request")
    if connection_error(e):
        return error_response(503, f"The model process is unavailable: {e}",
                              "service_unavailable")
    logger.exception("Unhandled error", exc_info=e)
    return error_response(500, f"{type(e).__name__}: {e}", "internal_error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the gateway's error mapping on ``app``: any exception through
    :func:`exception_to_response`; request validation errors as 422 naming the fields
    (400 for a body that is not JSON); Starlette's HTTP errors (404, 405) in the JSON
    error shape."""

    @app.exception_handler(Exception)
    async def _any_error(request: Request, exc: Exception):
        return exception_to_response(exc)

    @app.exception_handler(XinferenceError)
    async def _xinference_error(request: Request, exc: XinferenceError):
        return exception_to_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(400, "Request body is not valid JSON")
        parts = []
        for e in errors:
            loc = [str(x) for x in e.get("loc", ()) if x != "body"]
            parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg')}")
        param = ".".join(str(x) for x in errors[0].get("loc", ()) if x != "body") or None
        return error_response(422, "; ".join(parts), param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(exc.status_code, str(exc.detail),
                              "not_found_error" if exc.status_code == 404
                              else "invalid_request_error")
