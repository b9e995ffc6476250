"""ModelActor: one per running model replica, inside the model's own sub-pool process.

It owns the engine instance, admits requests (a bounded queue: ``request_limits``; over it,
:class:`TooManyRequestsError` at once), runs the blocking engine in a worker thread, and
serves streams: a streamed response is produced in the background into a per-stream buffer
and returned as a :class:`ModelStream` handle. The REST API reads its SSE frames from this
process's stream channel (:mod:`xinference.core.stream_channel`, no RPC per chunk) and
takes the end with one pull; without a channel it pulls with :meth:`ModelActor.next_sse` /
:meth:`ModelActor.next_chunks` (every chunk ready at that moment in one RPC).

Why not xoscar's ``@xo.generator``: it costs one RPC per chunk, and its iterator handle,
when garbage-collected, starts a thread with a new event loop and a new connection to the
model process to destroy a generator that usually ended already (measured: 3.8 ms of the API
process's CPU and 2.6 ms of the model process's per streamed request).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import threading
import time
import uuid
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Tuple

import xoscar as xo

from ..errors import (
    ConflictError,
    InvalidRequestError,
    RequestAbortedError,
    RequestNotFoundError,
    TooManyRequestsError,
)
from .limits import (
    RETRY_AFTER_SECONDS,
    cap_max_tokens,
    completion_defaults,
    positional_names,
    request_options,
)
from .metrics import ModelStats, metrics_enabled
from .stream_channel import StreamChannelServer, channel_enabled, new_token
from .streams import (
    STREAM_END,
    STREAM_IDLE_TIMEOUT,
    AdmittedRequest,
    ModelStream,
    StreamBuffer,
    sse_frame,
)

logger = logging.getLogger(__name__)

#: the progress of a finished image or video request stays readable this many seconds
REQUEST_PROGRESS_TTL = 600.0


class ModelActor(xo.StatelessActor):
    """Wraps one loaded model.

    Args:
        model_uid: uid of the running model (a replica shares it).
        model_type: ``"LLM"``, ``"embedding"`` ...
        model_desc: the launch description (family JSON, chosen spec ...), reported back.
        loader: a picklable ``ModelLoader`` whose ``load()`` returns the engine object.
        request_limits: most requests admitted at once (running + waiting); None = no bound.
    """

    def __init__(self, model_uid: str, model_type: str, model_desc: Dict[str, Any],
                 loader, request_limits: Optional[int] = None):
        super().__init__()
        self._model_uid = model_uid
        self._model_type = model_type
        self._desc = model_desc
        self._loader = loader
        self._request_limits = request_limits
        self._model = None
        self._lock = asyncio.Lock()
        self._admitted = 0
        self._queued = 0  # admitted calls waiting for the engine lock
        # (owner, request_id) -> its call, while it runs: ids are per caller, so one user
        # can neither abort nor read another's request (see abort_request).
        self._requests: Dict[Tuple[Optional[str], str], AdmittedRequest] = {}
        self._stats = ModelStats()
        self._metrics = metrics_enabled()
        self._streams: Dict[str, StreamBuffer] = {}
        self._by_token: Dict[str, StreamBuffer] = {}  # channel tokens not yet used
        self._channel: Optional[StreamChannelServer] = None
        self._progress: Dict[Tuple[Optional[str], str], Any] = {}  # as _requests
        self._positional: Dict[Any, tuple] = {}  # (method, n args) -> positional names
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="engine"
        )

    @classmethod
    def default_uid(cls):  # pragma: no cover - uid is always given
        return "model"

    async def __pre_destroy__(self):
        for sid in list(self._streams):
            self.close_stream(sid)
        if self._channel is not None:
            self._channel.close()
        close = getattr(self._model, "close", None)  # engines with processes of their own
        if callable(close):
            try:
                await asyncio.to_thread(close)
            except Exception:  # noqa: BLE001 - the process is removed anyway
                logger.exception("Closing the engine of %s failed", self._model_uid)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def load(self) -> Dict[str, Any]:
        """Load the weights in the engine thread; returns timings and the process id."""
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._executor, self._loader.load)
        if channel_enabled() and self.address:  # (an actor outside a pool has none)
            await self.start_channel(self.address.rsplit(":", 1)[0].strip("[]"))
        return {"load_seconds": time.perf_counter() - t0, "pid": os.getpid()}

    async def start_channel(self, host: str) -> None:
        """Listen for stream channels on ``host``, this pool's host (see
        :mod:`xinference.core.stream_channel`); without one, streams are pulled by RPC."""
        server = StreamChannelServer(self._attach_channel)
        try:
            await server.start(host)
        except OSError as e:
            logger.warning("No stream channel for %s on %s (%s): streams go by RPC",
                           self._model_uid, host, e)
            return
        self._channel = server

    def _attach_channel(self, token: str, writer) -> Optional[StreamBuffer]:
        st = self._by_token.pop(token, None)
        if st is not None:
            st.token = None
            st.attach(writer)
        return st

    def describe(self) -> Dict[str, Any]:
        return dict(self._desc, pid=os.getpid(), admitted_requests=self._admitted)

    def pid(self) -> int:
        return os.getpid()

    def in_flight(self) -> int:
        """Requests this replica still serves: calls admitted and not finished, plus
        streams whose chunks are not all read yet (a replica being removed is stopped
        once this is 0, see :mod:`xinference.core.scaling`)."""
        return self._admitted + len(self._streams)

    async def engine_stats(self) -> Dict[str, Any]:
        """The engine's counters (its ``stats()``: busy slots, cancelled requests ...) plus
        ``admitted_requests``; ``{}`` from the engine when it keeps none."""
        stats = getattr(self._model, "stats", None)
        out = await asyncio.to_thread(stats) if callable(stats) else {}
        return dict(out, admitted_requests=self._admitted)

    # ---- admission ----------------------------------------------------------------------
    def _admit(self):
        if self._request_limits is not None and self._admitted >= self._request_limits:
            e = TooManyRequestsError(
                f"Model {self._model_uid!r} is at its request limit "
                f"({self._request_limits}); retry later."
            )
            e.retry_after = RETRY_AFTER_SECONDS  # pickled with it: the gateway's header
            raise e
        self._admitted += 1

    def _require(self, method: str):
        if self._model is None:
            raise InvalidRequestError(f"Model {self._model_uid!r} is not loaded")
        if not hasattr(self._model, method):
            abilities = self._desc.get("model_ability")
            raise InvalidRequestError(
                f"Model {self._model_uid!r} ({self._model_type}) does not support {method}"
                + (f"; its abilities are {list(abilities)}" if abilities else "")
            )
        return getattr(self._model, method)

    async def _call(self, method: str, *args, request_id: Optional[str] = None,
                    request_owner: Optional[str] = None, strip_usage: bool = False,
                    **kwargs):
        """Run an engine method; returns its result, or a :class:`ModelStream` when the
        result is a stream of chunks.

        ``request_id`` (optional, unique among the calls running here) makes the call
        abortable with :meth:`abort_request` by its ``request_owner`` (the user the gateway
        authenticated; None with auth off), and ids are unique per owner; ``strip_usage``:
        a stream's usage-only chunk was asked for the metrics and is not passed on.

        Two kinds of engine method:

        * ``async def`` methods belong to engines that batch requests themselves
          (continuous or dynamic batching); they are awaited concurrently, and may return an
          async iterator for a stream.
        * plain methods run one at a time in the engine thread under the engine lock; they
          get a ``cancel`` event, set when this call is cancelled. A returned iterator is
          drained in the engine thread, which keeps the lock until the generation ends
          (whether or not anyone pulls).

        Raises:
            ConflictError: ``request_id`` is already running here (409).
            TooManyRequestsError: over ``request_limits`` (429).
            RequestAbortedError: a non-stream call was aborted (499).
        """
        fn = self._require(method)
        key = (method, len(args))
        names = self._positional.get(key)
        if names is None:
            names = self._positional[key] = positional_names(fn, len(args))
        for name in names:
            if name in kwargs:
                raise InvalidRequestError(f"'{name}' is not an option of this route (it "
                                          "is the request's input)")
        if request_id is not None:
            if not isinstance(request_id, str) or not request_id or len(request_id) > 256:
                raise InvalidRequestError("'request_id' must be a non-empty string of at "
                                          "most 256 characters")
            if (request_owner, request_id) in self._requests:
                raise ConflictError(f"Request {request_id!r} is already running on model "
                                    f"{self._model_uid!r}")
        self._admit()
        req = AdmittedRequest(request_id, method, request_owner, strip_usage=strip_usage)
        if request_id is not None:
            self._requests[(request_owner, request_id)] = req
        streaming = False
        outcome = "error"
        try:
            task = asyncio.ensure_future(self._run(fn, args, kwargs, req))
            req.abort = task.cancel
            try:
                result = await task
            except asyncio.CancelledError:
                outcome = "aborted"
                if req.aborted:
                    raise RequestAbortedError(
                        f"Request {request_id!r} was aborted") from None
                raise
            if isinstance(result, ModelStream):
                streaming = True  # the stream's producer ends the request
            elif isinstance(result, dict) and isinstance(result.get("usage"), dict):
                req.usage = result["usage"]
            outcome = "ok"
            return result
        finally:
            if not streaming:
                self._finish(req, outcome)

    def _finish(self, req: AdmittedRequest, outcome: str) -> None:
        """A call ended: release its admission, forget its id, record its metrics."""
        self._admitted -= 1
        key = (req.owner, req.request_id)
        if req.request_id is not None and self._requests.get(key) is req:
            del self._requests[key]
        if req.aborted:
            outcome = "aborted"
        if self._metrics:
            self._stats.finished(req.started, outcome, req.ttft, req.usage)

    async def _run(self, fn, args, kwargs, req: AdmittedRequest):
        if inspect.iscoroutinefunction(fn):
            result = await fn(*args, **kwargs)
            if isinstance(result, AsyncIterator):
                return self._pump(result, req)
            return result
        released = False
        self._queued += 1
        try:
            await self._lock.acquire()
        finally:
            self._queued -= 1
        try:
            cancel = threading.Event()
            loop = asyncio.get_running_loop()
            try:
                result = await loop.run_in_executor(
                    self._executor, lambda: fn(*args, cancel=cancel, **kwargs)
                )
            except asyncio.CancelledError:
                # The caller went away (the API cancels the call when its client
                # disconnects) or the request was aborted: the engine stops at its next
                # token. The next request queues behind it in the one engine thread.
                cancel.set()
                raise
            if isinstance(result, Iterator):
                released = True
                return self._drain(result, cancel, req)
            return result
        finally:
            if not released:
                self._lock.release()

    def _open(self, cancel, req: AdmittedRequest) -> "tuple[ModelStream, StreamBuffer]":
        self._reap()
        st = StreamBuffer(cancel, req, self._model)
        req.stream = st
        sid = uuid.uuid4().hex
        self._streams[sid] = st
        if self._channel is None:
            return ModelStream(sid), st
        st.token = new_token()
        self._by_token[st.token] = st
        return ModelStream(sid, self._channel.address, st.token), st

    def _forget(self, stream_id: str) -> Optional[StreamBuffer]:
        """Drop a stream (and its unused channel token); returns it, or None."""
        st = self._streams.pop(stream_id, None)
        if st is not None and st.token is not None:
            self._by_token.pop(st.token, None)
        return st

    def _pump(self, source: AsyncIterator, req: AdmittedRequest) -> ModelStream:
        """Stream an async engine's iterator: a task moves its chunks into the buffer."""
        handle, st = self._open(lambda: task.cancel(), req)
        st.source = source  # it may push its chunks once a channel is attached

        async def pump():
            outcome = "error"
            try:
                async for item in source:
                    st.put(item)
                st.put(STREAM_END)
                outcome = "ok"
            except asyncio.CancelledError:
                st.put(STREAM_END)
                outcome = "aborted"
            except BaseException as e:  # relayed to the puller
                st.put(e)
            finally:
                st.ended = True
                self._finish(req, outcome)
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()

        task = asyncio.get_running_loop().create_task(pump())
        return handle

    def _drain(self, it: Iterator, cancel: threading.Event, req: AdmittedRequest) -> ModelStream:
        """Stream a blocking engine's iterator: the engine thread drains it into the buffer
        and then releases the engine lock."""
        loop = asyncio.get_running_loop()
        handle, st = self._open(cancel.set, req)
        put = st.put

        def produce() -> str:
            try:
                for item in it:
                    loop.call_soon_threadsafe(put, item)
                    if cancel.is_set():
                        break
                loop.call_soon_threadsafe(put, STREAM_END)
                return "aborted" if cancel.is_set() else "ok"
            except BaseException as e:  # relayed to the puller
                loop.call_soon_threadsafe(put, e)
                return "error"
            finally:
                close = getattr(it, "close", None)
                if close:
                    close()

        def done(fut):
            st.ended = True
            outcome = "error" if fut.cancelled() or fut.exception() else fut.result()
            self._finish(req, outcome)
            self._lock.release()

        loop.run_in_executor(self._executor, produce).add_done_callback(done)
        return handle

    # ---- abort and metrics --------------------------------------------------------------
    def _find(self, table: Dict[Tuple[Optional[str], str], Any], request_id: str,
              owner: Optional[str], any_owner: bool):
        """The entry of ``request_id`` sent by ``owner`` (any owner's with
        ``any_owner``: an admin), or None."""
        found = table.get((owner, request_id))
        if found is None and any_owner:
            found = next((v for (_, rid), v in list(table.items()) if rid == request_id),
                         None)
        return found

    def abort_request(self, request_id: str, owner: Optional[str] = None,
                      any_owner: bool = False) -> Dict[str, Any]:
        """Stop the running call ``request_id``: a stream ends at once, with the closing
        chunk the model gives (its hook ``abort_chunk(method, last_chunk)``: an LLM's says
        ``finish_reason`` ``"abort"``) when it has one (the engine stops at its next token); a
        non-stream call is answered with :class:`RequestAbortedError` (499). Works for every
        engine that stops on cancellation (async engines: task cancellation; blocking
        engines: the ``cancel`` event).

        Only the request's ``owner`` (the user that sent it; None with auth off) may abort
        it, or an admin (``any_owner``); another user's request is not found.

        Raises:
            RequestNotFoundError: no call with that id runs here for ``owner`` (never
                started, finished already, or another user's).
        """
        req = self._find(self._requests, request_id, owner, any_owner)
        if req is None:
            raise RequestNotFoundError(
                f"No running request {request_id!r} on model {self._model_uid!r}")
        req.aborted = True
        st = req.stream
        if st is not None:
            if not st.final:
                closing = getattr(self._model, "abort_chunk", None)
                chunk = closing(req.method, st.last) if closing is not None else None
                if chunk is not None:  # the model's chunk says why its stream ended
                    st.put(chunk)
                st.put(STREAM_END)
            if not st.ended:
                st.cancel()
        elif req.abort is not None:
            req.abort()
        return {"request_id": request_id, "model_uid": self._model_uid, "aborted": True}


    async def get_metrics(self) -> Dict[str, Any]:
        """``{"model_uid", "model_name", "engine", "stats"}``: this replica's counters
        (see :class:`~xinference.core.metrics.ModelStats`), for one scrape, with the
        engine scheduler's ``requests_running`` / ``requests_waiting`` where the engine
        reports them (vLLM, Transformers, llama.cpp)."""
        snap = self._stats.snapshot(self._admitted, self._queued)
        stats = getattr(self._model, "stats", None)
        if callable(stats):
            try:
                engine = await asyncio.to_thread(stats)
            except Exception:  # noqa: BLE001 - a scrape never fails for an engine counter
                engine = {}
            snap["engine_running"] = engine.get("requests_running")
            snap["engine_waiting"] = engine.get("requests_waiting")
        return {"model_uid": self._model_uid, "model_name": self._desc.get("model_name"),
                "engine": self._desc.get("model_engine"), "stats": snap}

    def _reap(self) -> None:
        """Drop finished streams nobody pulled for ``STREAM_IDLE_TIMEOUT`` seconds."""
        now = time.monotonic()
        for sid, st in list(self._streams.items()):
            if st.ended and now - st.touched > STREAM_IDLE_TIMEOUT:
                self._forget(sid)

    async def next_sse(self, stream_id: str, timeout: Optional[float] = None
                       ) -> Optional[bytes]:
        """Every chunk of the stream ready now as Server-Sent Events, encoded here once as
        the bytes that go on the wire (``data: <json>`` and a blank line per chunk, joined),
        so the gateway relays them without parsing; None once the stream has ended; ``b""``
        when ``timeout`` seconds passed without a chunk (the gateway then sends a keep-alive
        comment and pulls again). Same waiting, errors and end as :meth:`next_chunks`.

        Raises:
            InvalidRequestError: unknown (or already finished) stream.
        """
        chunks = await self.next_chunks(stream_id, timeout)
        if chunks is None:
            return None
        if not chunks:
            return b""
        if len(chunks) == 1:
            return sse_frame(chunks[0])
        return b"".join([sse_frame(c) for c in chunks])

    async def next_chunks(self, stream_id: str, timeout: Optional[float] = None
                          ) -> Optional[List[Any]]:
        """Every chunk of the stream ready now (waits for at least one, at most ``timeout``
        seconds: then ``[]``), or None once the stream has ended (it is then forgotten).
        An engine error is raised here.

        Raises:
            InvalidRequestError: unknown (or already finished) stream.
        """
        st = self._streams.get(stream_id)
        if st is None:
            raise InvalidRequestError(f"No open stream {stream_id!r}")
        st.touched = time.monotonic()
        items = await st.take(timeout)
        out = []
        for item in items:
            if item is STREAM_END or isinstance(item, BaseException):
                if out:  # deliver the chunks first; the end comes with the next pull
                    st.items.appendleft(item)
                    return out
                self._forget(stream_id)
                if item is STREAM_END:
                    return None
                raise item
            out.append(item)
        return out

    def close_stream(self, stream_id: str) -> None:
        """Stop a stream early (its client went away) and forget it; unknown ids are
        ignored."""
        st = self._forget(stream_id)
        if st is not None and not st.ended:
            st.cancel()

    # ---- public API ---------------------------------------------------------------------
    def _llm_config(self, generate_config: Optional[Dict[str, Any]]):
        """``(config, request_id, owner, strip_usage)``: ``request_id`` and
        ``request_owner`` taken out of the config; ``max_tokens`` clamped to the launch's
        ``max_tokens_limit`` (and set to it when the request gives none); with metrics on,
        the model's hook ``stream_usage(config)`` asks a stream for its usage (the token
        metrics need it) and says whether the client did not ask (``strip_usage``: the
        usage chunk is then dropped)."""
        cfg = dict(generate_config or {})
        rid = cfg.pop("request_id", None)
        owner = cfg.pop("request_owner", None)
        cap_max_tokens(cfg, self._desc.get("max_tokens_limit"))
        strip = False
        usage = getattr(self._model, "stream_usage", None) if self._metrics else None
        if usage is not None:
            cfg, strip = usage(cfg)
        return cfg, rid, owner, strip

    async def generate(self, prompt: str, generate_config: Optional[Dict[str, Any]] = None):
        """OpenAI Completions; a :class:`ModelStream` when ``generate_config["stream"]``.
        ``generate_config["request_id"]`` makes it abortable (:meth:`abort_request`).
        Without ``max_tokens`` (or ``max_completion_tokens``) it generates
        :data:`~xinference.core.limits.COMPLETIONS_DEFAULT_MAX_TOKENS` tokens at most, as
        OpenAI's completions API does; the model's ``max_tokens_limit`` caps it (see
        :meth:`_llm_config`)."""
        cfg = completion_defaults(generate_config)
        cfg, rid, owner, strip = self._llm_config(cfg)
        return await self._call("generate", prompt, cfg, request_id=rid,
                                request_owner=owner, strip_usage=strip)

    async def chat(self, messages: List[Dict[str, Any]],
                   generate_config: Optional[Dict[str, Any]] = None):
        """OpenAI Chat Completions; a :class:`ModelStream` when
        ``generate_config["stream"]``; ``generate_config["request_id"]`` as in
        :meth:`generate`."""
        cfg, rid, owner, strip = self._llm_config(generate_config)
        return await self._call("chat", messages, cfg, request_id=rid,
                                request_owner=owner, strip_usage=strip)

    async def count_chat_tokens(self, messages: List[Dict[str, Any]],
                                generate_config: Optional[Dict[str, Any]] = None) -> int:
        """Prompt tokens of a chat request, without generating (no admission: nothing
        runs on the engine)."""
        return await self._require("count_chat_tokens")(messages, generate_config)

    # ---- embedding and rerank (engines batch concurrent requests themselves) ----------
    async def create_embedding(self, input: Any, config: Optional[Dict[str, Any]] = None):
        """OpenAI Embeddings: ``input`` plus ``config`` (``encoding_format``,
        ``dimensions`` ...); see the embedding engine's ``create_embedding``."""
        cfg = request_options(config)
        rid = cfg.pop("request_id", None)
        return await self._call("create_embedding", input, request_id=rid, **cfg)

    async def rerank(self, documents: Any, config: Optional[Dict[str, Any]] = None):
        """Rerank ``documents``; ``config`` holds ``query``, ``top_n``,
        ``max_chunks_per_doc``, ``return_documents`` (see the rerank engine's ``rerank``)."""
        cfg = request_options(config)
        rid = cfg.pop("request_id", None)
        return await self._call("rerank", documents, request_id=rid, **cfg)

    # ---- audio (see xinference.model.audio) --------------------------------------------
    async def transcriptions(self, audio: bytes, config: Optional[Dict[str, Any]] = None):
        """OpenAI create-transcription of ``audio`` (the uploaded file's bytes); ``config``
        holds ``language``, ``prompt``, ``response_format``, ``temperature``,
        ``timestamp_granularities``, ``kwargs``. A dict or a string (text formats)."""
        return await self._call("transcriptions", audio,
                                **request_options(config))

    async def translations(self, audio: bytes, config: Optional[Dict[str, Any]] = None):
        """OpenAI create-translation (English text of ``audio``); ``config`` as
        :meth:`transcriptions` without ``language`` and granularities."""
        return await self._call("translations", audio,
                                **request_options(config))

    async def speech(self, input: str, config: Optional[Dict[str, Any]] = None):
        """OpenAI create-speech: the audio file's bytes, or a :class:`ModelStream` of byte
        chunks when ``config["stream"]``; ``config`` holds ``voice``, ``response_format``,
        ``speed``, ``stream``."""
        return await self._call("speech", input, **request_options(config))

    # ---- image and video (blocking engines; progress readable while they run) --------
    async def _tracked_call(self, method: str, *args, config: Optional[Dict[str, Any]]):
        """:meth:`_call` with a :class:`RequestProgress` for ``config["request_id"]``
        (generated when absent) passed to the engine as ``progress``; the id also makes
        the request abortable (:meth:`abort_request`).

        Raises:
            ConflictError: that request id is already queued or running here.
        """
        from ..errors import ConflictError
        from ..model.progress import RequestProgress

        config = request_options(config)
        rid = str(config.pop("request_id", None) or uuid.uuid4().hex)
        owner = config.pop("request_owner", None)
        self._reap_progress()
        old = self._progress.get((owner, rid))
        if old is not None and old.finished_at is None:
            raise ConflictError(f"Request {rid!r} is already running")
        prog = self._progress[(owner, rid)] = RequestProgress(rid)
        try:
            return await self._call(method, *args, request_id=rid, request_owner=owner,
                                    progress=prog, **config)
        except asyncio.CancelledError:
            if prog.status == "queued":  # never reached the engine
                prog.finish("cancelled")
            elif prog.finished_at is None:
                prog.status = "cancelling"  # the engine stops at its next step
            raise
        except BaseException:
            if prog.finished_at is None:
                prog.finish("error")
            raise

    def _reap_progress(self) -> None:
        now = time.monotonic()
        for key, p in list(self._progress.items()):
            if p.finished_at is not None and now - p.finished_at > REQUEST_PROGRESS_TTL:
                del self._progress[key]

    def get_request_progress(self, request_id: str, owner: Optional[str] = None,
                             any_owner: bool = False) -> Dict[str, Any]:
        """``{"request_id", "status", "progress"}`` of an image or video request (see
        :class:`~xinference.model.progress.RequestProgress`), for its ``owner`` or an admin
        (``any_owner``), as :meth:`abort_request`.

        Raises:
            RequestNotFoundError: unknown request id, or another user's (HTTP 404).
        """
        from ..errors import RequestNotFoundError

        p = self._find(self._progress, request_id, owner, any_owner)
        if p is None:
            raise RequestNotFoundError(f"No request {request_id!r} on model "
                                     f"{self._model_uid!r}")
        return p.to_dict()

    async def text_to_image(self, prompt: str, config: Optional[Dict[str, Any]] = None):
        """Images for ``prompt``; ``config``: ``n``, ``size``, ``negative_prompt``,
        ``request_id``, ``seed`` and pipeline options. Returns ``{"created", "data":
        [PNG bytes]}``."""
        return await self._tracked_call("text_to_image", prompt, config=config)

    async def image_to_image(self, image: bytes, config: Optional[Dict[str, Any]] = None):
        """Variations of ``image`` (encoded bytes); ``config`` as :meth:`text_to_image`
        plus ``prompt``."""
        return await self._tracked_call("image_to_image", image, config=config)

    async def inpainting(self, image: bytes, mask_image: bytes,
                         config: Optional[Dict[str, Any]] = None):
        """Repaint the masked part of ``image``; ``config`` as :meth:`image_to_image`."""
        return await self._tracked_call("inpainting", image, mask_image, config=config)

    async def ocr(self, image: bytes, config: Optional[Dict[str, Any]] = None):
        """The text in ``image``: ``{"created", "text", "data": [{"text", "box",
        "score"}]}``."""
        return await self._tracked_call("ocr", image, config=config)

    async def text_to_video(self, prompt: str, config: Optional[Dict[str, Any]] = None):
        """Videos for ``prompt``: ``{"created", "data": [MP4 bytes]}``; ``config``:
        ``n``, ``size``, ``fps``, ``request_id``, ``seed``, ``num_frames`` ..."""
        return await self._tracked_call("text_to_video", prompt, config=config)
