"""Dynamic batching inside a model process: many small concurrent requests, one engine call.

Used by the embedding and rerank engines, whose methods are ``async def`` so the ModelActor
awaits them concurrently (see :meth:`xinference.core.model.ModelActor._call`). Each request
submits a list of items (sentences, or (query, document) pairs); one background task takes
waiting requests in arrival order, joins their items into one list, runs the blocking
engine function on it in the engine thread and hands each request its slice of the result.

Bounds: a batch holds at most ``max_batch_size`` items (a single request larger than that
is run alone, whole), and the task waits at most ``max_wait_s`` after the first waiting
request for more to arrive. While the engine is busy, new requests simply queue, so under
load batches fill without any waiting.

Requests with different ``key`` (e.g. a different prompt) never share a batch.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Hashable, List, Optional, Sequence

logger = logging.getLogger(__name__)


@dataclass
class _Request:
    key: Hashable
    items: Sequence[Any]
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher:
    """Gathers concurrent :meth:`submit` calls into calls of ``fn(key, items) -> results``.

    Args:
        fn: blocking function; gets the batch key and a flat list of items and returns a
            sequence of the same length (one result per item, in order).
        max_batch_size: most items per call (a larger single request runs alone).
        max_wait_s: longest wait for more requests once one is waiting, in seconds.
        executor: where ``fn`` runs (one thread keeps calls serial); a private
            single-thread executor when None.

    ``stats`` counts calls (``batches``) and items (``items``), for tests and benchmarks.
    """

    def __init__(self, fn: Callable[[Hashable, List[Any]], Sequence[Any]],
                 max_batch_size: int = 32, max_wait_s: float = 0.002,
                 executor: Optional[concurrent.futures.Executor] = None):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must be >= 0")
        self._fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="batch"
        )
        self._queue: Deque[_Request] = deque()
        self._wakeup: Optional[asyncio.Event] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._task: Optional[asyncio.Task] = None
        self.stats = {"batches": 0, "items": 0, "max_items": 0}

    async def submit(self, items: Sequence[Any], key: Hashable = None) -> List[Any]:
        """Run ``items`` (in some batch) and return their results in order.

        Raises:
            whatever ``fn`` raised for the batch this request was part of.
        """
        if not items:
            return []
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (tests)
            self._loop, self._wakeup, self._task = loop, asyncio.Event(), None
        req = _Request(key, list(items), loop.create_future())
        self._queue.append(req)
        self._wakeup.set()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await req.future

    def _pending_items(self, key: Hashable) -> int:
        return sum(len(r.items) for r in self._queue if r.key == key)

    def _take(self) -> List[_Request]:
        """Pop the oldest request plus later ones of the same key that fit in the batch."""
        first = self._queue.popleft()
        batch, n, rest = [first], len(first.items), deque()
        while self._queue:
            r = self._queue.popleft()
            if r.key == first.key and n + len(r.items) <= self.max_batch_size:
                batch.append(r)
                n += len(r.items)
            else:
                rest.append(r)
        self._queue.extendleft(reversed(rest))
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            first = self._queue[0]
            deadline = first.enqueued + self.max_wait_s
            while self._pending_items(first.key) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except asyncio.TimeoutError:
                    break
            batch = [r for r in self._take() if not r.future.done()]  # drop cancelled
            if not batch:
                continue
            items = [it for r in batch for it in r.items]
            try:
                results = await loop.run_in_executor(self._executor, self._fn,
                                                     first.key, items)
                if len(results) != len(items):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(items)} items"
                    )
            except BaseException as e:  # every request of the batch gets the error
                for r in batch:
                    if not r.future.done():
                        r.future.set_exception(e)
                if isinstance(e, asyncio.CancelledError):
                    raise
                continue
            self.stats["batches"] += 1
            self.stats["items"] += len(items)
            self.stats["max_items"] = max(self.stats["max_items"], len(items))
            start = 0
            for r in batch:
                end = start + len(r.items)
                if not r.future.done():
                    r.future.set_result(list(results[start:end]))
                start = end

    def shutdown(self) -> None:
        """Stop the background task and the executor; waiting requests are cancelled."""
        if self._task is not None:
            self._task.cancel()
        while self._queue:
            r = self._queue.popleft()
            if not r.future.done():
                r.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
