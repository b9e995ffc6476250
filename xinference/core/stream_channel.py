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
relays what it reads without parsing. The channel carries data only: when the stream ends
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
from typing import Callable, Optional

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


class StreamChannelServer:
    """The model process's listener for stream channels.

    Args:
        attach: ``attach(token, transport, ping_seconds)`` gives the stream of ``token``
            the connection's transport to write its frames to; returns an object with
            ``detach()`` (called when the connection ends) and ``written`` (a count of
            frames written, read for keep-alives), or None for an unknown token (the
            connection is then closed).
    """

    def __init__(self, attach: Callable[[str, asyncio.Transport], Optional[object]]):
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
        sink = None
        try:
            line = await asyncio.wait_for(reader.readline(), HANDSHAKE_SECONDS)
            parts = line.decode("ascii", "replace").split()
            if not line.endswith(b"\n") or len(line) > MAX_LINE or len(parts) != 2:
                return
            token, ping = parts[0], float(parts[1])
            sink = self._attach(token, writer.transport)
            if sink is None:
                return
            await self._hold(reader, writer, sink, max(ping, 1.0))
        except (asyncio.TimeoutError, ValueError, asyncio.LimitOverrunError,
                ConnectionError):
            pass
        except Exception:  # noqa: BLE001 - one broken channel must not touch the rest
            logger.debug("Stream channel failed", exc_info=True)
        finally:
            if sink is not None:
                sink.detach()
            writer.close()

    @staticmethod
    async def _hold(reader, writer, sink, ping: float) -> None:
        """Keep the connection while the stream writes to it: until the gateway closes it
        (EOF) or the stream ends (the sink closes the transport). A keep-alive comment
        goes out after ``ping`` seconds without a frame (one timer per period, not per
        token)."""
        eof = asyncio.ensure_future(reader.read())
        try:
            seen = sink.written
            while not eof.done() and not writer.transport.is_closing():
                await asyncio.wait([eof], timeout=ping)
                if eof.done() or writer.transport.is_closing():
                    break
                if sink.written == seen:
                    writer.transport.write(b": ping\n\n")
                seen = sink.written
        finally:
            eof.cancel()
