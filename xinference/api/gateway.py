"""The gateway object every route shares: the supervisor's ref, a cache of model actor
refs, calls to a model's ModelActor and the relay of its streams as SSE.

A request reaches its model in one hop: :class:`ModelRefCache` keeps, per model uid, the
ModelActor refs of its ready replicas (read once from the supervisor's
``describe_model``) and takes them in turn (round-robin, as the supervisor does). When a
call through such a ref finds the model gone (no such actor, or its process's connection
refused or closed), the entry is dropped, the supervisor is asked once again (its
health-checked ``get_model``, which also marks dead replicas) and the call is sent to the
replica it names: a model terminated and launched again under the same uid is found anew.
A call whose process dies while it runs is sent again in the same way (xoscar reports a
dead process and a connection closed mid-call alike); with no other replica the
supervisor's answer (503, or 404 once terminated) is the response.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

import xoscar as xo
from fastapi import Request
from starlette.responses import StreamingResponse
from xoscar.core import create_actor_ref

from ..core.stream_channel import channel_enabled
from ..core.streams import ModelStream
from ..errors import ModelUnavailableError
from .caller import with_owner
from .errors import (
    ClientDisconnected,
    OrjsonResponse,
    connection_error,
    exception_to_response,
)

logger = logging.getLogger(__name__)

PING_SECONDS = 15.0  # an SSE comment after this long without data
# No caching, no proxy buffering of the event stream.
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
#: the SSE comment sent after :data:`PING_SECONDS` without data
SSE_PING = b": ping\n\n"


def sse_response(events: AsyncIterator[bytes]) -> StreamingResponse:
    """A ``text/event-stream`` response of already-encoded events (``events`` yields the
    bytes that go on the wire), with :data:`SSE_HEADERS`; Starlette's ``StreamingResponse``
    stops iterating when the client disconnects."""
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


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


#: fields of model descriptions that locate actor processes (xoscar addresses, process
#: ids): shown to admins only when auth is on (see :func:`redact_locations`)
LOCATION_FIELDS = frozenset({"worker_address", "model_address", "address", "pid"})


def sees_locations(request: Optional[Request]) -> bool:
    """Whether the caller may see actor addresses and pids: auth off (every caller is the
    operator), or a user with ``admin`` (set by :class:`~xinference.api.auth.
    AuthMiddleware`)."""
    if request is None:
        return False
    state = request.scope.get("state") or {}
    perms = state.get("permissions")
    if perms is None:
        return getattr(request.app.state.api, "auth", None) is None
    return "admin" in perms


def redact_locations(value: Any) -> Any:
    """``value`` (a description: dicts and lists) without :data:`LOCATION_FIELDS`, at any
    depth."""
    if isinstance(value, dict):
        return {k: redact_locations(v) for k, v in value.items()
                if k not in LOCATION_FIELDS}
    if isinstance(value, list):
        return [redact_locations(v) for v in value]
    return value


class ModelRefCache:
    """ModelActor refs of running models, by model uid, taken round-robin.

    ``supervisor``: an async callable returning the supervisor's ref. Counters ``hits``
    and ``misses`` (lookups answered here / sent to the supervisor) are for tests and
    debugging."""

    def __init__(self, supervisor: Callable[[], Any]):
        self._supervisor = supervisor
        self._refs: Dict[str, List[Any]] = {}
        self._next: Dict[str, int] = {}
        self.hits = 0
        self.misses = 0

    async def get(self, model_uid: str) -> Tuple[Any, bool]:
        """``(ref, checked)``: the next replica's ref; ``checked`` when it comes from the
        supervisor's health-checked ``get_model`` (refs read from the cache or from
        ``describe_model`` are not checked: the process may have died since).

        Raises:
            ModelNotFoundError, ModelUnavailableError: from the supervisor.
        """
        refs = self._refs.get(model_uid)
        if refs:
            self.hits += 1
            i = self._next[model_uid]
            self._next[model_uid] = (i + 1) % len(refs)
            return refs[i], False
        self.misses += 1
        sup = await self._supervisor()
        desc = await sup.describe_model(model_uid)
        rows = [r for r in desc.get("replicas") or [] if r.get("status") == "ready"]
        if rows and all(r.get("model_address") for r in rows):
            # made here, without a round trip (xo.actor_ref asks the process first)
            refs = [create_actor_ref(r["model_address"], r["replica_uid"]) for r in rows]
            self._refs[model_uid], self._next[model_uid] = refs, 1 % len(refs)
            return refs[0], False
        # no ready replica listed: the supervisor's health-checked lookup names the cause
        return await sup.get_model(model_uid), True

    async def refresh(self, model_uid: str) -> Any:
        """Drop ``model_uid``'s refs and ask the supervisor for a serving replica (its
        health-checked ``get_model``, which also marks dead replicas); the next
        :meth:`get` reads the replica list again."""
        self.drop(model_uid)
        self.misses += 1
        return await (await self._supervisor()).get_model(model_uid)

    def drop(self, model_uid: str) -> None:
        """Forget ``model_uid``'s refs (terminated, relaunched, or found gone)."""
        self._refs.pop(model_uid, None)
        self._next.pop(model_uid, None)


#: seconds a stream channel may take to connect (a firewall that drops packets between
#: hosts must not hold a stream for TCP's own timeout)
CHANNEL_CONNECT_SECONDS = 3.0
#: a channel address that could not be reached is not tried again for this long
CHANNEL_RETRY_SECONDS = 60.0
_unreachable: Dict[str, float] = {}  # channel address -> when it failed


class _ChannelReader(asyncio.Protocol):
    """The gateway's end of a stream channel: what arrived since the last :meth:`read`, in
    one piece (no stream-reader buffering or limits on the per-token path)."""

    def __init__(self):
        self._parts: List[bytes] = []
        self._waiter: Optional[asyncio.Future] = None
        self._ended = False
        self._error: Optional[BaseException] = None
        self.transport: Optional[asyncio.Transport] = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._parts.append(data)
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False  # close the transport

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self._ended = True
        self._error = exc
        self._wake()

    async def read(self) -> bytes:
        """The bytes received since the last read (waits for some); ``b""`` at the end.

        Raises:
            OSError: the connection broke (the bytes received before it come first)."""
        if not self._parts and not self._ended:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        parts = self._parts
        if parts:
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            parts.clear()
            return data
        if self._error is not None:
            raise self._error
        return b""

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def _open_channel(stream: ModelStream) -> Optional[_ChannelReader]:
    """The open channel of ``stream`` (its token sent), or None when it cannot be reached
    (the stream is then pulled by RPC; the address is skipped for
    :data:`CHANNEL_RETRY_SECONDS`)."""
    failed = _unreachable.get(stream.channel)
    if failed is not None and time.monotonic() - failed < CHANNEL_RETRY_SECONDS:
        return None
    host, _, port = stream.channel.rpartition(":")
    loop = asyncio.get_running_loop()
    try:
        transport, conn = await asyncio.wait_for(
            loop.create_connection(_ChannelReader, host.strip("[]"), int(port)),
            CHANNEL_CONNECT_SECONDS)
    except (OSError, ValueError, asyncio.TimeoutError) as e:
        logger.warning("Stream channel %s unreachable (%s): streams from it are pulled "
                       "by RPC", stream.channel, type(e).__name__)
        _unreachable[stream.channel] = time.monotonic()
        return None
    transport.write(f"{stream.token} {PING_SECONDS}\n".encode("ascii"))
    return conn


class RESTfulAPI:
    """What every route shares: the supervisor's ref, calls to a model's ModelActor
    (:meth:`_infer`, SSE relay) through :class:`ModelRefCache`, and the start time.
    Handlers live in :mod:`xinference.api.routers`, one module per area; the app is
    assembled in :mod:`xinference.api.restful_api`."""

    def __init__(self, supervisor_address: str):
        self.supervisor_address = supervisor_address
        self._supervisor_ref = None
        self.models = ModelRefCache(self.supervisor)
        self.started = time.time()
        self._closing: set = set()  # close_stream calls of abandoned streams, in flight
        self.auth = None  # an AuthService when --auth-config is given
        self.http_metrics = None  # HTTPMetrics unless XINFERENCE_DISABLE_METRICS
        self.login_limiter = None  # a LoginRateLimiter for POST /token
        self.use_channel = channel_enabled()  # read SSE from stream channels

    async def supervisor(self):
        """The supervisor's actor ref (made on first use)."""
        if self._supervisor_ref is None:
            self._supervisor_ref = await xo.actor_ref(
                address=self.supervisor_address, uid="supervisor"
            )
        return self._supervisor_ref

    async def _model(self, model_uid: str):
        """A ModelActor ref of ``model_uid`` (see :class:`ModelRefCache`)."""
        return (await self.models.get(model_uid))[0]

    # ---- inference ---------------------------------------------------------------------
    async def _infer(self, method: str, model_uid: str, payload, config: Dict[str, Any],
                     request: Optional[Request] = None):
        """Call ``method`` of the model's ModelActor; a stream becomes an SSE response.
        With ``request``, a client that disconnects before a (non-stream) answer is ready
        cancels the call, so the model stops generating for nobody."""
        ref, result = await self._call_model(method, model_uid, payload, config, request)
        if not isinstance(result, ModelStream):
            return OrjsonResponse(result)
        return sse_response(self._sse(ref, result))

    async def _call_model(self, method: str, model_uid: str, payload,
                          config: Dict[str, Any], request: Optional[Request] = None):
        """``(ref, result)`` of ``method`` of the model's ModelActor (see :meth:`_infer`;
        for routes that answer something else than JSON or SSE). The request's
        authenticated user becomes the owner of its ``request_id`` (:func:`with_owner`)."""
        config = with_owner(config, request)
        return await self._call_uid(model_uid, method, (payload, config),
                                    request if not config.get("stream") else None)

    async def _call_uid(self, model_uid: str, method: str, args, request=None,
                        on_ref: Optional[Callable[[Any], None]] = None):
        """``(ref, ref.<method>(*args))`` on a replica of ``model_uid``. When a ref not
        checked by the supervisor finds its model gone, the model's refs are dropped, the
        supervisor is asked once more and the call is sent to the replica it names (see
        the module docstring). ``on_ref(ref)`` is called before each call is sent (to
        track where it runs)."""
        ref, checked = await self.models.get(model_uid)
        if on_ref is not None:
            on_ref(ref)
        try:
            return ref, await self._call_ref(ref, model_uid, method, args, request,
                                             raw=not checked)
        except BaseException as e:
            if checked or not connection_error(e):
                raise
            logger.info("Model %r: replica at %s gone (%s); asking the supervisor again",
                        model_uid, ref.address, type(e).__name__)
        ref = await self.models.refresh(model_uid)
        if on_ref is not None:
            on_ref(ref)
        return ref, await self._call_ref(ref, model_uid, method, args, request)

    @staticmethod
    def _unavailable(model_uid: str, e: BaseException) -> ModelUnavailableError:
        return ModelUnavailableError(
            f"The process of model {model_uid!r} is unavailable ({type(e).__name__}); "
            "terminate it and launch it again.")

    @classmethod
    async def _call_ref(cls, ref, model_uid: str, method: str, args, request=None,
                        raw: bool = False):
        """``ref.<method>(*args)``; with ``request``, a client that disconnects first
        cancels the call. A dead model process becomes :class:`ModelUnavailableError`
        unless ``raw`` (the caller handles it)."""
        call = getattr(ref, method)(*args)
        try:
            if request is not None:
                return await _unless_disconnected(request, call)
            return await call
        except BaseException as e:
            if not raw and connection_error(e):
                raise cls._unavailable(model_uid, e) from e
            raise

    async def _relay(self, ref, stream: ModelStream, pull: Callable[[str], Any],
                     on_error: Callable[[Exception], bytes], end: bytes = b"",
                     ping: Optional[bytes] = None, channel: bool = False
                     ) -> AsyncIterator[bytes]:
        """The bytes of a model stream, pulled from the model process in batches (``pull``
        returns everything ready at once, already encoded, or None at the end), then
        ``end``. A pull that returns ``b""`` waited without data (see
        :meth:`ModelActor.next_sse`'s ``timeout``): ``ping`` is yielded then, when given
        (an SSE comment keeps proxies from closing a connection during a long prefill).
        The pull is awaited directly, no task or timer here per pull: this is the
        per-token path. An error after the stream has started becomes ``on_error(e)``
        (in-band), then ``end``. When the client goes away first (the generator is closed
        or cancelled), the model stops the stream.

        With ``channel`` and a stream that names one, the bytes are first read from the
        model process's stream channel (:mod:`xinference.core.stream_channel`: no RPC per
        chunk) until it closes; the pulls then return the end (or raise the error). A
        channel that cannot be opened leaves everything to the pulls."""
        sid = stream.stream_id
        conn = None
        if channel and stream.token is not None and self.use_channel:
            conn = await _open_channel(stream)
        try:
            if conn is not None:
                read = conn.read
                try:
                    while True:
                        data = await read()
                        if not data:
                            break
                        yield data
                except OSError as e:  # the rest is queued for the pulls
                    logger.info("Stream channel %s broke (%s)", stream.channel, e)
                conn.close()
                conn = None
            while True:
                data = await pull(sid)
                if data is None:
                    break
                if data:
                    yield data
                elif ping is not None:
                    yield ping
        except Exception as e:  # the stream has started: report in-band, then end it
            tail = on_error(e)
            if tail:
                yield tail
        except BaseException:  # cancelled or closed: the client disconnected
            if conn is not None:
                conn.close()
            task = asyncio.ensure_future(self._close_stream(ref, stream))
            self._closing.add(task)  # a reference until it is done
            task.add_done_callback(self._closing.discard)
            raise
        if end:
            yield end

    def _sse(self, ref, stream: ModelStream) -> AsyncIterator[bytes]:
        """SSE events of a model stream as the model process encoded them
        (:meth:`ModelActor.next_sse`: ``data: <json>`` and a blank line each), an error
        in-band as an error object, then ``data: [DONE]``; a ``: ping`` comment after each
        :data:`PING_SECONDS` without data (the model process answers a pull with ``b""``
        then)."""
        return self._relay(
            ref, stream, lambda sid: ref.next_sse(sid, PING_SECONDS),
            lambda e: b"data: " + exception_to_response(e).body + b"\n\n",
            b"data: [DONE]\n\n", ping=SSE_PING, channel=True)

    def _byte_stream(self, ref, stream: ModelStream) -> AsyncIterator[bytes]:
        """The raw chunks (``bytes``) of a model stream, for binary answers (speech), the
        chunks of one pull sent together. An error after the first bytes cannot be reported
        in-band: it is logged and the answer ends short."""
        def log(e: Exception) -> bytes:
            logger.error("Stream %s failed after it started: %s", stream.stream_id, e)
            return b""

        return self._relay_encoded(ref, stream, lambda chunk: chunk, log)

    def _relay_encoded(self, ref, stream: ModelStream, encode: Callable[[Any], bytes],
                       on_error: Callable[[Exception], bytes], end: bytes = b"",
                       ping: Optional[bytes] = None) -> AsyncIterator[bytes]:
        """:meth:`_relay` over the stream's chunks as objects (``next_chunks``), each
        turned into bytes here by ``encode`` and those of one pull joined: for answers
        that are not the model's own SSE (speech bytes, Anthropic events). With ``ping``
        (SSE answers), a pull waits at most :data:`PING_SECONDS` and ``ping`` is sent
        when it brought nothing; chunks that encode to nothing (a chat chunk with only
        the role) are no reason for a ping: the pull goes on."""
        timeout = PING_SECONDS if ping is not None else None

        async def pull(sid: str) -> Optional[bytes]:
            while True:
                chunks = await ref.next_chunks(sid, timeout)
                if not chunks:  # None: the end; []: waited PING_SECONDS in vain
                    return None if chunks is None else b""
                data = b"".join([encode(c) for c in chunks])
                if data:
                    return data

        return self._relay(ref, stream, pull, on_error, end, ping)

    @staticmethod
    async def _close_stream(ref, stream: ModelStream) -> None:
        try:
            await ref.close_stream(stream.stream_id)
        except Exception:  # the model process is gone: nothing to stop
            logger.debug("Closing stream %s failed", stream.stream_id, exc_info=True)
