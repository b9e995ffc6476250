"""ModelActor: one per running model replica, inside the model's own sub-pool process.

It owns the engine instance, admits requests (a bounded queue: ``request_limits``; over it,
:class:`TooManyRequestsError` at once), runs the blocking engine in a worker thread, and
serves streams: a streamed response is produced in the background into a per-stream buffer
and returned as a :class:`ModelStream` handle, whose chunks the REST API pulls with
:meth:`ModelActor.next_chunks` (every chunk ready at that moment in one RPC) and relays as
SSE.

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
from dataclasses import dataclass
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import xoscar as xo

from .errors import InvalidRequestError, TooManyRequestsError

logger = logging.getLogger(__name__)

_END = object()

#: a finished stream that nobody pulls (its client went away without closing it) is
#: dropped after this many seconds
STREAM_IDLE_TIMEOUT = 600.0


@dataclass(frozen=True)
class ModelStream:
    """What a streamed ``chat`` / ``generate`` returns across the RPC: the id of the
    stream inside its ModelActor. Pull with ``next_chunks(stream_id)`` until it returns
    None; ``close_stream(stream_id)`` stops it early."""

    stream_id: str


class _Stream:
    """The buffer of one streamed response: the producer (engine thread or pump task) puts
    chunks, :meth:`ModelActor.next_chunks` takes every ready one. Ends with ``_END`` or an
    exception put as an item."""

    def __init__(self, cancel):
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancel = cancel  # () -> None: stop producing
        self.ended = False  # the producer finished
        self.touched = time.monotonic()


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
        self._streams: Dict[str, _Stream] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="engine"
        )

    @classmethod
    def default_uid(cls):  # pragma: no cover - uid is always given
        return "model"

    async def __pre_destroy__(self):
        for sid in list(self._streams):
            self.close_stream(sid)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def load(self) -> Dict[str, Any]:
        """Load the weights in the engine thread; returns timings and the process id."""
        t0 = time.perf_counter()
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._executor, self._loader.load)
        return {"load_seconds": time.perf_counter() - t0, "pid": os.getpid()}

    def describe(self) -> Dict[str, Any]:
        return dict(self._desc, pid=os.getpid(), admitted_requests=self._admitted)

    def pid(self) -> int:
        return os.getpid()

    async def engine_stats(self) -> Dict[str, Any]:
        """The engine's counters (its ``stats()``: busy slots, cancelled requests ...) plus
        ``admitted_requests``; ``{}`` from the engine when it keeps none."""
        stats = getattr(self._model, "stats", None)
        out = await asyncio.to_thread(stats) if callable(stats) else {}
        return dict(out, admitted_requests=self._admitted)

    # ---- admission ----------------------------------------------------------------------
    def _admit(self):
        if self._request_limits is not None and self._admitted >= self._request_limits:
            raise TooManyRequestsError(
                f"Model {self._model_uid!r} is at its request limit "
                f"({self._request_limits}); retry later."
            )
        self._admitted += 1

    def _require(self, method: str):
        if self._model is None:
            raise InvalidRequestError(f"Model {self._model_uid!r} is not loaded")
        if not hasattr(self._model, method):
            raise InvalidRequestError(
                f"Model {self._model_uid!r} ({self._model_type}) does not support {method}"
            )
        return getattr(self._model, method)

    async def _call(self, method: str, *args, **kwargs):
        """Run an engine method; returns its result, or a :class:`ModelStream` when the
        result is a stream of chunks.

        Two kinds of engine method:

        * ``async def`` methods belong to engines that batch requests themselves
          (continuous or dynamic batching); they are awaited concurrently, and may return an
          async iterator for a stream.
        * plain methods run one at a time in the engine thread under the engine lock; they
          get a ``cancel`` event, set when this call is cancelled. A returned iterator is
          drained in the engine thread, which keeps the lock until the generation ends
          (whether or not anyone pulls).
        """
        fn = self._require(method)
        self._admit()
        if inspect.iscoroutinefunction(fn):
            try:
                result = await fn(*args, **kwargs)
            except BaseException:
                self._admitted -= 1
                raise
            if isinstance(result, AsyncIterator):
                return self._pump(result)
            self._admitted -= 1
            return result
        released = False
        try:
            await self._lock.acquire()
            try:
                cancel = threading.Event()
                loop = asyncio.get_running_loop()
                try:
                    result = await loop.run_in_executor(
                        self._executor, lambda: fn(*args, cancel=cancel, **kwargs)
                    )
                except asyncio.CancelledError:
                    # The caller went away (the API cancels the call when its client
                    # disconnects): the engine stops at its next token. The next request
                    # queues behind it in the one engine thread.
                    cancel.set()
                    raise
                if isinstance(result, Iterator):
                    released = True
                    return self._drain(result, cancel)
                return result
            finally:
                if not released:
                    self._lock.release()
        finally:
            if not released:
                self._admitted -= 1

    def _open(self, cancel) -> "tuple[ModelStream, _Stream]":
        self._reap()
        st = _Stream(cancel)
        sid = uuid.uuid4().hex
        self._streams[sid] = st
        return ModelStream(sid), st

    def _pump(self, source: AsyncIterator) -> ModelStream:
        """Stream an async engine's iterator: a task moves its chunks into the buffer."""
        handle, st = self._open(lambda: task.cancel())

        async def pump():
            try:
                async for item in source:
                    st.queue.put_nowait(item)
                st.queue.put_nowait(_END)
            except asyncio.CancelledError:
                st.queue.put_nowait(_END)
            except BaseException as e:  # relayed to the puller
                st.queue.put_nowait(e)
            finally:
                st.ended = True
                self._admitted -= 1
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()

        task = asyncio.get_running_loop().create_task(pump())
        return handle

    def _drain(self, it: Iterator, cancel: threading.Event) -> ModelStream:
        """Stream a blocking engine's iterator: the engine thread drains it into the buffer
        and then releases the engine lock."""
        loop = asyncio.get_running_loop()
        handle, st = self._open(cancel.set)
        put = st.queue.put_nowait

        def produce():
            try:
                for item in it:
                    loop.call_soon_threadsafe(put, item)
                    if cancel.is_set():
                        break
                loop.call_soon_threadsafe(put, _END)
            except BaseException as e:  # relayed to the puller
                loop.call_soon_threadsafe(put, e)
            finally:
                close = getattr(it, "close", None)
                if close:
                    close()

        def done(_):
            st.ended = True
            self._admitted -= 1
            self._lock.release()

        loop.run_in_executor(self._executor, produce).add_done_callback(done)
        return handle

    def _reap(self) -> None:
        """Drop finished streams nobody pulled for ``STREAM_IDLE_TIMEOUT`` seconds."""
        now = time.monotonic()
        for sid, st in list(self._streams.items()):
            if st.ended and now - st.touched > STREAM_IDLE_TIMEOUT:
                del self._streams[sid]

    async def next_chunks(self, stream_id: str) -> Optional[List[Any]]:
        """Every chunk of the stream ready now (waits for at least one), or None once the
        stream has ended (it is then forgotten). An engine error is raised here.

        Raises:
            InvalidRequestError: unknown (or already finished) stream.
        """
        st = self._streams.get(stream_id)
        if st is None:
            raise InvalidRequestError(f"No open stream {stream_id!r}")
        st.touched = time.monotonic()
        q = st.queue
        items = [await q.get()]
        while not q.empty():
            items.append(q.get_nowait())
        out = []
        for item in items:
            if item is _END or isinstance(item, BaseException):
                if out:  # deliver the chunks first; the end comes with the next pull
                    q.put_nowait(item)
                    return out
                self._streams.pop(stream_id, None)
                if item is _END:
                    return None
                raise item
            out.append(item)
        return out

    def close_stream(self, stream_id: str) -> None:
        """Stop a stream early (its client went away) and forget it; unknown ids are
        ignored."""
        st = self._streams.pop(stream_id, None)
        if st is not None and not st.ended:
            st.cancel()

    # ---- public API ---------------------------------------------------------------------
    async def generate(self, prompt: str, generate_config: Optional[Dict[str, Any]] = None):
        """OpenAI Completions; a :class:`ModelStream` when ``generate_config["stream"]``."""
        return await self._call("generate", prompt, generate_config)

    async def chat(self, messages: List[Dict[str, Any]],
                   generate_config: Optional[Dict[str, Any]] = None):
        """OpenAI Chat Completions; a :class:`ModelStream` when
        ``generate_config["stream"]``."""
        return await self._call("chat", messages, generate_config)

    # ---- embedding and rerank (engines batch concurrent requests themselves) ----------
    async def create_embedding(self, input: Any, config: Optional[Dict[str, Any]] = None):
        """OpenAI Embeddings: ``input`` plus ``config`` (``encoding_format``,
        ``dimensions`` ...); see the embedding engine's ``create_embedding``."""
        return await self._call("create_embedding", input, **(config or {}))

    async def rerank(self, documents: Any, config: Optional[Dict[str, Any]] = None):
        """Rerank ``documents``; ``config`` holds ``query``, ``top_n``,
        ``max_chunks_per_doc``, ``return_documents`` (see the rerank engine's ``rerank``)."""
        return await self._call("rerank", documents, **(config or {}))

    # ---- audio (see xinference.model.audio) --------------------------------------------
    async def transcriptions(self, audio: bytes, config: Optional[Dict[str, Any]] = None):
        """OpenAI create-transcription of ``audio`` (the uploaded file's bytes); ``config``
        holds ``language``, ``prompt``, ``response_format``, ``temperature``,
        ``timestamp_granularities``, ``kwargs``. A dict or a string (text formats)."""
        return await self._call("transcriptions", audio, **(config or {}))

    async def translations(self, audio: bytes, config: Optional[Dict[str, Any]] = None):
        """OpenAI create-translation (English text of ``audio``); ``config`` as
        :meth:`transcriptions` without ``language`` and granularities."""
        return await self._call("translations", audio, **(config or {}))

    async def speech(self, input: str, config: Optional[Dict[str, Any]] = None):
        """OpenAI create-speech: the audio file's bytes, or a :class:`ModelStream` of byte
        chunks when ``config["stream"]``; ``config`` holds ``voice``, ``response_format``,
        ``speed``, ``stream``."""
        return await self._call("speech", input, **(config or {}))
