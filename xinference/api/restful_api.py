"""The REST gateway: OpenAI ``/v1`` routes and Xinference's model-management routes.

:func:`create_app` builds the FastAPI app for a supervisor address from the route tables
of :mod:`xinference.api.routers` (one module per area). Per request the app asks
the supervisor for the model's ModelActor ref and then talks to the model process directly.
Errors are JSON with both Xinference's ``detail`` and OpenAI's ``error`` object.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable, Dict, Optional

import orjson
import xoscar as xo
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import ModelUnavailableError, XinferenceError
from ..core.model import ModelStream
from .caller import with_owner
from .routers import all_routes

logger = logging.getLogger(__name__)


class OrjsonResponse(JSONResponse):
    """A JSON response rendered with orjson (UTF-8, shortest float repr; numpy arrays as
    JSON arrays, float32 ones with float32's shortest repr). Inference results are returned
    this way, bypassing FastAPI's ``jsonable_encoder``: an embedding of 384 floats costs the
    API process a fraction of what the json module takes."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(status: int, message: str, error_type: str, param: Optional[str] = None):
    """``{"detail": msg, "error": {"message", "type", "param", "code"}}``: readable by
    Xinference clients (``detail``) and OpenAI clients (``error``)."""
    return {"detail": message,
            "error": {"message": message, "type": error_type, "param": param, "code": status}}


def error_response(status: int, message: str, error_type: str = "invalid_request_error",
                   param: Optional[str] = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, error_type, param), status_code=status)


def _connection_error(e: BaseException) -> bool:
    from xoscar.errors import ActorNotExist, ServerClosed

    return isinstance(e, (ServerClosed, ActorNotExist, ConnectionError, EOFError))


class ClientDisconnected(Exception):
    """The HTTP client went away before its answer was ready."""


def exception_to_response(e: BaseException) -> JSONResponse:
    """Map an exception (possibly raised in another process) to an error response."""
    if isinstance(e, XinferenceError):
        resp = error_response(e.status_code, e.message, e.error_type)
        if e.status_code == 401:
            resp.headers["WWW-Authenticate"] = "Bearer"
        return resp
    if isinstance(e, ClientDisconnected):  # nobody reads it; 499 as nginx logs it
        return error_response(499, "Client closed the request", "client_closed_request")
    if _connection_error(e):
        return error_response(503, f"The model process is unavailable: {e}",
                              "service_unavailable")
    logger.exception("Unhandled error", exc_info=e)
    return error_response(500, f"{type(e).__name__}: {e}", "internal_error")


async def _unless_disconnected(request: Request, call):
    """Await ``call`` unless the client disconnects first; then cancel it (xoscar passes
    the cancellation on to the model process) and raise :class:`ClientDisconnected`.

    The request body has been read, so the ASGI ``receive`` now only returns at
    ``http.disconnect``."""
    task = asyncio.ensure_future(call)

    async def disconnected():
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise ClientDisconnected()
    return task.result()


class RESTfulAPI:
    """What every route shares: the supervisor's ref, calls to a model's ModelActor
    (:meth:`_infer`, SSE relay) and the start time. Handlers live in
    :mod:`xinference.api.routers`, one module per area."""

    def __init__(self, supervisor_address: str):
        self.supervisor_address = supervisor_address
        self._supervisor_ref = None
        self.started = time.time()
        self._closing: set = set()  # close_stream calls of abandoned streams, in flight
        self.auth = None  # an AuthService when --auth-config is given
        self.http_metrics = None  # HTTPMetrics unless XINFERENCE_DISABLE_METRICS

    async def supervisor(self):
        if self._supervisor_ref is None:
            self._supervisor_ref = await xo.actor_ref(
                address=self.supervisor_address, uid="supervisor"
            )
        return self._supervisor_ref

    async def _model(self, model_uid: str):
        return await (await self.supervisor()).get_model(model_uid)

    # ---- inference ---------------------------------------------------------------------
    async def _infer(self, method: str, model_uid: str, payload, config: Dict[str, Any],
                     request: Optional[Request] = None):
        """Call ``method`` of the model's ModelActor; a stream becomes an SSE response.
        With ``request``, a client that disconnects before a (non-stream) answer is ready
        cancels the call, so the model stops generating for nobody."""
        ref, result = await self._call_model(method, model_uid, payload, config, request)
        if not isinstance(result, ModelStream):
            return OrjsonResponse(result)
        return EventSourceResponse(self._sse(ref, result), sep="\n", ping=15)

    async def _call_model(self, method: str, model_uid: str, payload,
                          config: Dict[str, Any], request: Optional[Request] = None):
        """``(ref, result)`` of ``method`` of the model's ModelActor (see :meth:`_infer`;
        for routes that answer something else than JSON or SSE). The request's
        authenticated user becomes the owner of its ``request_id`` (:func:`with_owner`)."""
        ref = await self._model(model_uid)
        config = with_owner(config, request)
        result = await self._call_ref(ref, model_uid, method, (payload, config),
                                      request if not config.get("stream") else None)
        return ref, result

    @staticmethod
    async def _call_ref(ref, model_uid: str, method: str, args, request=None):
        """``ref.<method>(*args)``; with ``request``, a client that disconnects first
        cancels the call. A dead model process becomes :class:`ModelUnavailableError`."""
        call = getattr(ref, method)(*args)
        try:
            if request is not None:
                return await _unless_disconnected(request, call)
            return await call
        except BaseException as e:
            if _connection_error(e):
                raise ModelUnavailableError(
                    f"The process of model {model_uid!r} is unavailable ({type(e).__name__}); "
                    "terminate it and launch it again."
                ) from e
            raise

    async def _relay(self, ref, stream: ModelStream, encode: Callable[[Any], bytes],
                     on_error: Callable[[Exception], bytes], end: bytes = b""
                     ) -> AsyncIterator[bytes]:
        """The chunks of a model stream as ``encode(chunk)`` bytes, pulled from the model
        process in batches (every chunk ready at each pull), then ``end``. An error after
        the stream has started becomes ``on_error(e)`` (in-band), then ``end``. When the
        client goes away first (the generator is closed or cancelled), the model stops the
        stream."""
        try:
            while True:
                chunks = await ref.next_chunks(stream.stream_id)
                if chunks is None:
                    break
                for chunk in chunks:
                    yield encode(chunk)
        except Exception as e:  # the stream has started: report in-band, then end it
            tail = on_error(e)
            if tail:
                yield tail
        except BaseException:  # cancelled or closed: the client disconnected
            task = asyncio.ensure_future(self._close_stream(ref, stream))
            self._closing.add(task)  # a reference until it is done
            task.add_done_callback(self._closing.discard)
            raise
        if end:
            yield end

    def _sse(self, ref, stream: ModelStream) -> AsyncIterator[bytes]:
        """SSE events of a model stream, encoded here (``data: <json>`` and a blank line;
        JSON has no raw newlines, so one ``data`` line each), an error in-band as an error
        object, then ``data: [DONE]``."""
        return self._relay(
            ref, stream, lambda chunk: b"data: " + orjson.dumps(chunk) + b"\n\n",
            lambda e: b"data: " + exception_to_response(e).body + b"\n\n",
            b"data: [DONE]\n\n")

    def _byte_stream(self, ref, stream: ModelStream) -> AsyncIterator[bytes]:
        """The raw chunks (``bytes``) of a model stream, for binary answers (speech). An
        error after the first bytes cannot be reported in-band: it is logged and the
        answer ends short."""
        def log(e: Exception) -> bytes:
            logger.error("Stream %s failed after it started: %s", stream.stream_id, e)
            return b""

        return self._relay(ref, stream, lambda chunk: chunk, log)

    @staticmethod
    async def _close_stream(ref, stream: ModelStream) -> None:
        try:
            await ref.close_stream(stream.stream_id)
        except Exception:  # the model process is gone: nothing to stop
            logger.debug("Closing stream %s failed", stream.stream_id, exc_info=True)


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
                              "not_found_error" if exc.status_code == 404 else "invalid_request_error")

    return app
