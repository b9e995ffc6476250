"""What a streamed call leaves in the model process: the :class:`ModelStream` handle that
crosses the RPC, the per-stream buffer (:class:`StreamBuffer`) that the producer fills and
:meth:`~xinference.core.model.ModelActor.next_chunks` drains, and the record of one admitted
call (:class:`AdmittedRequest`)."""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import orjson

STREAM_END = object()

#: a finished stream that nobody pulls (its client went away without closing it) is
#: dropped after this many seconds
STREAM_IDLE_TIMEOUT = 600.0



def sse_frame(chunk: Any) -> bytes:
    """One chunk as the Server-Sent Event that goes on the wire: ``data: <json>`` and a
    blank line (the JSON by orjson)."""
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


@dataclass(frozen=True)
class ModelStream:
    """What a streamed ``chat`` / ``generate`` returns across the RPC: the id of the
    stream inside its ModelActor. Pull with ``next_chunks(stream_id)`` until it returns
    None; ``close_stream(stream_id)`` stops it early.

    ``channel`` (``"host:port"``) and ``token``: where the stream's SSE frames can be read
    directly instead (:mod:`xinference.core.stream_channel`); None when the model process
    has no channel."""

    stream_id: str
    channel: Optional[str] = None
    token: Optional[str] = None


@dataclass
class AdmittedRequest:
    """One admitted call: what :meth:`ModelActor.abort_request` needs to stop it, and what
    the metrics record when it ends."""

    request_id: Optional[str]
    method: str
    owner: Optional[str] = None  # the key's user that sent it (auth on), see abort_request
    started: float = field(default_factory=time.monotonic)
    strip_usage: bool = False  # usage was asked for the metrics only: drop its chunk
    abort: Optional[Callable[[], None]] = None  # cancels the call while it has no stream
    stream: Optional["StreamBuffer"] = None
    aborted: bool = False
    ttft: Optional[float] = None
    usage: Optional[Dict[str, Any]] = None


class StreamBuffer:
    """The buffer of one streamed response: the producer (engine thread or pump task) puts
    chunks, :meth:`ModelActor.next_chunks` takes every ready one. Ends with ``STREAM_END`` or an
    exception put as an item; nothing put after that is kept (an abort ends a stream
    before its producer has stopped).

    ``model``: the engine object; its optional hooks ``chunk_has_output(chunk)`` (the first
    such chunk marks the time to first token) and ``is_usage_chunk(chunk)`` (the chunk that
    a forced usage request adds, dropped) read the chunks, whose shape only the model knows
    (see :class:`~xinference.model.llm.responses.OpenAIStreams`).
    """

    def __init__(self, cancel, req: Optional[AdmittedRequest] = None, model: Any = None):
        self.items: collections.deque = collections.deque()
        self._waiter: Optional[asyncio.Future] = None  # a pull waiting for the next item
        self.cancel = cancel  # () -> None: stop producing
        self.req = req
        self._has_output = getattr(model, "chunk_has_output", None)
        self._is_usage = getattr(model, "is_usage_chunk", None)
        self.ended = False  # the producer finished
        self.final = False  # the end is in the queue: later items are dropped
        self.last: Optional[Dict[str, Any]] = None  # the last chunk put
        self.touched = time.monotonic()
        self.token: Optional[str] = None  # the stream channel's token, until attached
        #: what produces the chunks; with a ``direct(write)`` method (see
        #: :class:`~xinference.model.llm.responses.ChunkStream`) it can push them from
        #: the engine's thread once a channel is attached
        self.source: Any = None
        self._sink = None  # the channel's writer while the gateway reads it
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self.written = 0  # frames written to the channel

    def attach(self, sink) -> None:
        """Write this stream's chunks as SSE frames to ``sink`` (a
        :class:`~xinference.core.stream_channel.ChannelWriter`) from now on: the ones
        queued now at once, later ones as they are put. An end or an error stays queued
        for the gateway's final pull, and the sink is closed when it is reached. When the
        sink can be written from any thread and the source can push (``direct``), the
        chunks go from the engine's thread to the channel without waking the event loop
        (event loop thread only)."""
        frames = []
        items = self.items
        while items and isinstance(items[0], dict):
            frames.append(sse_frame(items.popleft()))
        if frames:
            sink.write(b"".join(frames))
            self.written += 1
        if items:  # the end (or an error, or a non-chunk item) is next: pull it by RPC
            sink.close()
            return
        self._sink = sink
        self._loop = asyncio.get_running_loop()
        direct = getattr(self.source, "direct", None)
        if direct is not None and sink.go_direct():
            direct(self.put_chunk)

    def detach(self) -> None:
        """The channel ended: later chunks are queued for RPC pulls again."""
        self._sink = None

    def _keep(self, chunk: Dict[str, Any]) -> bool:
        """Account a chunk (time to first output, usage); False for the usage chunk that
        only the metrics asked for (dropped)."""
        req = self.req
        if req is not None:
            if req.ttft is None and self._has_output is not None \
                    and self._has_output(chunk):
                req.ttft = time.monotonic() - req.started
            if chunk.get("usage") is not None:
                req.usage = chunk["usage"]
                if req.strip_usage and self._is_usage is not None and self._is_usage(chunk):
                    return False
        return True

    def _deliver(self, chunk: Dict[str, Any]) -> bool:
        """Account ``chunk`` and write it to the channel when one is attached; False when
        it is still to be queued for the pulls."""
        if not self._keep(chunk):
            return True  # dropped
        self.last = chunk
        sink = self._sink
        if sink is not None and sink.write(sse_frame(chunk)):
            self.written += 1
            return True
        return False

    def put_chunk(self, chunk: Dict[str, Any]) -> None:
        """Deliver a chunk from the source's push mode, in any thread: written to the
        channel, or (the channel is gone) queued on the event loop for RPC pulls."""
        if not self.final and not self._deliver(chunk):
            self._loop.call_soon_threadsafe(self._queue, chunk)

    def put(self, item: Any) -> None:
        """Queue a chunk, ``STREAM_END`` or an exception (event loop thread only)."""
        if self.final:
            return
        if isinstance(item, dict):
            if self._deliver(item):
                return
        elif item is STREAM_END or isinstance(item, BaseException):
            self.final = True
        if self._sink is not None and not isinstance(item, dict):
            self._sink.close()  # the end, or not a chunk: the channel is done
            self._sink = None
        self._queue(item)

    def _queue(self, item: Any) -> None:
        if self.final and isinstance(item, dict):
            return  # a pushed chunk that arrived after the end
        self.items.append(item)
        w = self._waiter
        if w is not None:
            self._waiter = None
            if not w.done():
                w.set_result(None)

    async def take(self, timeout: Optional[float] = None) -> List[Any]:
        """Every item queued now; waits for at least one, at most ``timeout`` seconds
        (then ``[]``). One future per wait and a timer only while waiting: the per-token
        path of a stream, cheaper than ``asyncio.Queue`` with ``asyncio.wait_for``."""
        if not self.items:
            loop = asyncio.get_running_loop()
            w = self._waiter = loop.create_future()
            timer = (loop.call_later(timeout, _wake, w) if timeout is not None else None)
            try:
                await w
            finally:
                if timer is not None:
                    timer.cancel()
                if self._waiter is w:
                    self._waiter = None
        out = list(self.items)
        self.items.clear()
        return out


def _wake(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)
