"""ModelActor: one per running model replica, inside the model's own sub-pool process.

It owns the engine instance, admits requests (a bounded queue: ``request_limits``; over it,
:class:`TooManyRequestsError` at once), runs the blocking engine in a worker thread, and
exposes streams with ``@xo.generator`` so the REST API can relay chunks as SSE.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import os
import threading
import time
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional

import xoscar as xo

from .errors import InvalidRequestError, TooManyRequestsError

logger = logging.getLogger(__name__)

_END = object()


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
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="engine"
        )

    @classmethod
    def default_uid(cls):  # pragma: no cover - uid is always given
        return "model"

    async def __pre_destroy__(self):
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
        """Run an engine method and return its result or an async stream of chunks.

        Two kinds of engine method:

        * ``async def`` methods belong to engines that batch requests themselves
          (continuous or dynamic batching); they are awaited concurrently, and may return an
          async iterator for a stream.
        * plain methods run one at a time in the engine thread under the engine lock; they
          get a ``cancel`` event, and a returned iterator is drained in the engine thread and
          relayed as an async generator that holds the lock until it ends.
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
                return self._count_stream(result)
            self._admitted -= 1
            return result
        released = False
        try:
            await self._lock.acquire()
            try:
                cancel = threading.Event()
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._executor, lambda: fn(*args, cancel=cancel, **kwargs)
                )
                if isinstance(result, Iterator):
                    released = True
                    return self._relay(result, cancel)
                return result
            finally:
                if not released:
                    self._lock.release()
        finally:
            if not released:
                self._admitted -= 1

    async def _count_stream(self, stream: AsyncIterator) -> AsyncIterator:
        try:
            async for item in stream:
                yield item
        finally:
            self._admitted -= 1
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _relay(self, it: Iterator, cancel: threading.Event) -> AsyncIterator:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def produce():
            try:
                for item in it:
                    loop.call_soon_threadsafe(queue.put_nowait, item)
                    if cancel.is_set():
                        break
                loop.call_soon_threadsafe(queue.put_nowait, _END)
            except BaseException as e:  # relayed to the consumer
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                close = getattr(it, "close", None)
                if close:
                    close()

        fut = loop.run_in_executor(self._executor, produce)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
            try:
                await asyncio.shield(fut)
            finally:
                self._admitted -= 1
                self._lock.release()

    # ---- public API ---------------------------------------------------------------------
    @xo.generator
    async def generate(self, prompt: str, generate_config: Optional[Dict[str, Any]] = None):
        """OpenAI Completions; a stream when ``generate_config["stream"]``."""
        return await self._call("generate", prompt, generate_config)

    @xo.generator
    async def chat(self, messages: List[Dict[str, Any]],
                   generate_config: Optional[Dict[str, Any]] = None):
        """OpenAI Chat Completions; a stream when ``generate_config["stream"]``."""
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
