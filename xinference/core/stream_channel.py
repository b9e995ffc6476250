"""A direct byte channel for the SSE of a model's streams: the per-token path without RPC.

Pulling each chunk with an actor call (:meth:`ModelActor.next_sse`) costs a request and an
answer through xoscar per token: serialisation, frame signing and dispatch on both sides,
about 0.4 ms of CPU each in the API and the model process on this kind of machine, which on
2 cores is taken from the engine's threads. Instead, the model process keeps one TCP
listener (:class:`StreamChannelServer`, on the host of its actor pool); a streamed call's
:class:`~xinference.core.streams.ModelStream` names it and carries a one-time secret token
(128 random bits, delivered over the signed actor RPC only). The gateway connects, sends
``<token> <ping_seconds>\\n``, and from then on the model process writes each chunk as the
SSE frame that goes on the wire (``data: <json>\\n\\n``) the moment it is produced; the gateway
relays what it reads without parsing. Streams that can push (an LLM's chunks, see
:class:`~xinference.model.llm.responses.ChunkStream`) write their frames from the engine's
thread, straight to the connection's socket (:class:`ChannelWriter`): the model process's
event loop is not woken per token. The channel carries data only: when the stream ends
(or fails) the model process closes it, and the gateway's one final RPC pull returns the end
or raises the error, as before. An unknown token, a silent client (5 s) or a line over 128
bytes is dropped without an answer.

When the channel cannot be used (connection refused or not made within 3 s, e.g. a
firewall between hosts that lets only the pool ports through; the
``XINFERENCE_STREAM_CHANNEL=0`` switch), the gateway pulls over RPC as before: the same
bytes; an unreachable channel address is not tried again for 60 s.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import threading
from typing import Callable, List, Optional

logger = logging.getLogger(__name__)

#: the environment switch: ``0`` keeps every stream on RPC pulls (both sides read it)
CHANNEL_ENV = "XINFERENCE_STREAM_CHANNEL"
#: seconds a connection may take to send its token line
HANDSHAKE_SECONDS = 5.0
MAX_LINE = 128


def channel_enabled() -> bool:
    """False when ``XINFERENCE_STREAM_CHANNEL`` is ``0`` / ``false`` / ``no``."""
    return os.environ.get(CHANNEL_ENV, "1").strip().lower() not in ("0", "false", "no")


def new_token() -> str:
    """A one-time stream token: 32 hex characters (128 random bits)."""
    return secrets.token_hex(16)


class ChannelWriter:
    """Writes one stream's SSE frames to its channel connection: on the event loop through
    the connection's transport, or, after :meth:`go_direct`, from any thread through a
    duplicate of its socket (non-blocking sends under a lock, so frames stay whole and in
    order). A send the socket cannot take whole (the gateway reads slower than the model
    writes) ends direct sending: that frame's rest and every later frame go through the
    transport, which buffers them, in order.

    Create it on the event loop of ``transport``.
    """

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._lock = threading.Lock()
        self._sock: Optional[socket.socket] = None  # set while sending directly
        self._pending: List[bytes] = []  # for the loop to write, in order
        self._scheduled = False
        self.closed = False

    def go_direct(self) -> bool:
        """Let :meth:`write` send from any thread; False (nothing changed) when the
        transport holds unsent data or its socket cannot be duplicated. Event loop only."""
        if self._sock is not None:
            return True
        raw = self._transport.get_extra_info("socket")
        if raw is None or self._transport.get_write_buffer_size():
            return False
        try:
            sock = socket.socket(fileno=os.dup(raw.fileno()))
        except OSError:
            return False
        sock.setblocking(False)
        self._sock = sock
        return True

    def write(self, data: bytes) -> bool:
        """Send ``data`` (whole frames); False when the writer is closed (nothing sent)."""
        with self._lock:
            if self.closed:
                return False
            if self._sock is not None and not self._pending:
                try:
                    sent = self._sock.send(data)
                except OSError:  # full (EAGAIN), or broken: the transport finds out too
                    sent = 0
                if sent == len(data):
                    return True
                data = data[sent:]
                self._sock.close()  # from now on the transport writes, in order
                self._sock = None
            self._pending.append(data)
            if threading.get_ident() == self._loop_thread:
                self._flush_locked()
            elif not self._scheduled:
                self._scheduled = True
                self._loop.call_soon_threadsafe(self._flush)
        return True

    def _flush(self) -> None:
        with self._lock:
            self._scheduled = False
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._pending and not self.closed:
            self._transport.write(b"".join(self._pending))
        self._pending.clear()

    def close(self) -> None:
        """Write what is pending and close the connection (idempotent; event loop only)."""
        with self._lock:
            if self.closed:
                return
            self._flush_locked()
            self.closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None
        self._transport.close()


class StreamChannelServer:
    """The model process's listener for stream channels.

    Args:
        attach: ``attach(token, writer)`` gives the stream of ``token`` the connection's
            :class:`ChannelWriter` to write its frames to; returns an object with
            ``detach()`` (called when the connection ends) and ``written`` (a count of
            frames written, read for keep-alives), or None for an unknown token (the
            connection is then closed).
    """

    def __init__(self, attach: Callable[[str, ChannelWriter], Optional[object]]):
        self._attach = attach
        self._server: Optional[asyncio.AbstractServer] = None
        self.address: Optional[str] = None

    async def start(self, host: str) -> str:
        """Listen on ``host`` (an ephemeral port); returns ``"host:port"``.

        Raises:
            OSError: the address cannot be bound.
        """
        self._server = await asyncio.start_server(self._serve, host, 0,
                                                  limit=MAX_LINE * 2)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"{host}:{port}"
        return self.address

    def close(self) -> None:
        """Stop listening (open channels end when their streams do)."""
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        sink = chan = None
        try:
            line = await asyncio.wait_for(reader.readline(), HANDSHAKE_SECONDS)
            parts = line.decode("ascii", "replace").split()
            if not line.endswith(b"\n") or len(line) > MAX_LINE or len(parts) != 2:
                return
            token, ping = parts[0], float(parts[1])
            chan = ChannelWriter(writer.transport)
            sink = self._attach(token, chan)
            if sink is None:
                return
            await self._hold(reader, chan, sink, max(ping, 1.0))
        except (asyncio.TimeoutError, ValueError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        except Exception:  # noqa: BLE001 - one broken channel must not touch the rest
            logger.debug("Stream channel failed", exc_info=True)
        finally:
            if sink is not None:
                sink.detach()
            if chan is not None:
                chan.close()
            writer.close()

    @staticmethod
    async def _hold(reader, chan: ChannelWriter, sink, ping: float) -> None:
        """Keep the connection while the stream writes to it: until the gateway closes it
        (EOF) or the stream ends (the sink closes the writer). A keep-alive comment goes
        out after ``ping`` seconds without a frame (one timer per period, not per
        token)."""
        eof = asyncio.ensure_future(reader.read())
        try:
            seen = sink.written
            while not eof.done() and not chan.closed:
                await asyncio.wait([eof], timeout=ping)
                if eof.done() or chan.closed:
                    break
                if sink.written == seen:
                    chan.write(b": ping\n\n")
                seen = sink.written
        finally:
            eof.cancel()
