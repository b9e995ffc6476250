"""The ModelActor's stream buffers, driven directly (no pool, no weights): a blocking engine
whose iterator is drained in the engine thread, and an async engine pumped by a task."""

from __future__ import annotations

import asyncio
import threading

import pytest

from xinference.errors import InvalidRequestError
from xinference.core.model import ModelActor, ModelStream
from xinference.model.llm.responses import OpenAIStreams


class BlockingEngine(OpenAIStreams):
    """A one-at-a-time engine: ``chat`` returns an iterator of ``n`` chunks, or a dict.
    Its streams stand for OpenAI chunks (the LLM hooks of the model actor)."""

    def __init__(self):
        self.started = threading.Event()
        self.gate = threading.Event()  # chunks after the first wait for it
        self.produced = 0

    def chat(self, messages, config, cancel):
        if not (config or {}).get("stream"):
            return {"whole": True}

        def chunks():
            for i in range(int(config.get("n", 5))):
                if i == 1:
                    self.started.set()
                    self.gate.wait(5)
                if config.get("fail_at") == i:
                    raise ValueError("engine broke")
                self.produced += 1
                yield {"i": i}
        return chunks()


class AsyncEngine(OpenAIStreams):
    """A batching engine: ``chat`` is ``async`` and returns an async iterator; LLM hooks
    as :class:`BlockingEngine`."""

    def __init__(self):
        self.closed = asyncio.Event()

    async def chat(self, messages, config):
        async def chunks():
            try:
                for i in range(1000):
                    await asyncio.sleep(0.001)
                    yield {"i": i}
            finally:
                self.closed.set()
        return chunks()


async def loaded_actor(engine) -> ModelActor:
    """A ModelActor (outside any pool) whose loader returns ``engine``, loaded."""
    class Loader:
        def load(self):
            return engine

    actor = ModelActor("m", "LLM", {}, Loader())
    await actor.load()
    return actor


def test_blocking_stream_is_buffered_and_frees_the_engine_unpulled():
    async def main():
        engine = BlockingEngine()
        actor = await loaded_actor(engine)
        handle = await actor.chat([], {"stream": True, "n": 6})
        assert isinstance(handle, ModelStream)
        engine.gate.set()
        # Nobody pulls, yet the generation runs to its end and the engine lock is free:
        # a plain request gets through.
        whole = await asyncio.wait_for(actor.chat([], {}), 5)
        assert whole == {"whole": True} and engine.produced == 6
        # Every ready chunk comes in one pull; then the end.
        first = await actor.next_chunks(handle.stream_id)
        assert first == [{"i": i} for i in range(6)]
        assert await actor.next_chunks(handle.stream_id) is None
        with pytest.raises(InvalidRequestError, match="No open stream"):
            await actor.next_chunks(handle.stream_id)
        actor.close_stream("no-such-stream")  # ignored
        assert actor.describe()["admitted_requests"] == 0

    asyncio.run(main())


def test_closing_a_blocking_stream_stops_the_engine():
    async def main():
        engine = BlockingEngine()
        actor = await loaded_actor(engine)
        handle = await actor.chat([], {"stream": True, "n": 1000})
        assert await actor.next_chunks(handle.stream_id) == [{"i": 0}]
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)
        actor.close_stream(handle.stream_id)
        engine.gate.set()
        assert await asyncio.wait_for(actor.chat([], {}), 5) == {"whole": True}
        assert engine.produced < 1000

    asyncio.run(main())


def test_an_engine_error_reaches_the_puller_after_the_chunks_before_it():
    async def main():
        engine = BlockingEngine()
        engine.gate.set()
        actor = await loaded_actor(engine)
        handle = await actor.chat([], {"stream": True, "n": 5, "fail_at": 3})
        got = []
        with pytest.raises(ValueError, match="engine broke"):
            while True:
                chunks = await actor.next_chunks(handle.stream_id)
                got.extend(chunks or [])
        assert got == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert await asyncio.wait_for(actor.chat([], {}), 5) == {"whole": True}

    asyncio.run(main())


def test_async_stream_is_pumped_and_closing_it_closes_the_engine_iterator():
    async def main():
        engine = AsyncEngine()
        actor = await loaded_actor(engine)
        handle = await actor.chat([], {"stream": True})
        got = []
        while len(got) < 5:
            got.extend(await actor.next_chunks(handle.stream_id))
        assert got[:5] == [{"i": i} for i in range(5)]
        actor.close_stream(handle.stream_id)
        await asyncio.wait_for(engine.closed.wait(), 5)
        await asyncio.sleep(0)
        assert actor.describe()["admitted_requests"] == 0

    asyncio.run(main())


def test_a_pull_with_a_timeout_returns_empty_sse_then_the_chunks():
    """``next_sse(sid, timeout)`` answers ``b""`` when nothing came in time (the gateway
    then sends a keep-alive comment), then the chunks as SSE frames, then None."""
    async def main():
        engine = BlockingEngine()
        actor = await loaded_actor(engine)
        handle = await actor.chat([], {"stream": True, "n": 3})
        assert await actor.next_sse(handle.stream_id) == b'data: {"i":0}\n\n'
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)
        assert await actor.next_sse(handle.stream_id, 0.05) == b""
        engine.gate.set()
        got = b""
        while True:
            data = await actor.next_sse(handle.stream_id, 5)
            if data is None:
                break
            got += data
        assert got == b'data: {"i":1}\n\ndata: {"i":2}\n\n'

    asyncio.run(main())


def test_delta_stream_wakes_the_loop_once_for_items_emitted_meanwhile():
    """Items emitted from another thread while a wake-up is pending ride on it: all arrive
    in order, with far fewer loop callbacks than items."""
    from xinference.model.llm.request import AsyncDeltaStream, Delta

    async def main():
        stream = AsyncDeltaStream(1)
        loop = asyncio.get_running_loop()
        calls = []
        real = loop.call_soon_threadsafe

        def counting(cb, *args, **kw):
            calls.append(cb)
            return real(cb, *args, **kw)

        loop.call_soon_threadsafe = counting
        n = 200

        def produce():  # the loop is blocked meanwhile (see below): one wake-up pending
            for i in range(n - 1):
                stream.emit([Delta(str(i))])
            stream.emit([Delta("", "stop")])

        t = threading.Thread(target=produce)
        t.start()
        t.join()  # blocks the loop until every item is emitted
        got = [d async for d in stream]
        assert [d.text for d in got] == [str(i) for i in range(n - 1)] + [""]
        assert got[-1].finish_reason == "stop"
        assert len(calls) == 1

    asyncio.run(main())


# ---- the stream channel (xinference.core.stream_channel) --------------------------------
async def _channel_open(handle, ping: float = 15.0):
    """``(reader, writer)`` of the stream's channel, its token line sent."""
    host, port = handle.channel.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"{handle.token} {ping}\n".encode())
    return reader, writer


async def _channel_read(handle, ping: float = 15.0) -> bytes:
    """Everything the stream's channel sends until the model process closes it."""
    reader, writer = await _channel_open(handle, ping)
    got = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return got


async def _pull_rest(actor, stream_id: str) -> bytes:
    """The stream's SSE bytes by RPC pulls, to its end."""
    got = b""
    while (data := await actor.next_sse(stream_id, 5)) is not None:
        got += data
    return got


def test_a_stream_channel_carries_the_sse_frames_and_the_end_stays_for_the_pull():
    """Chunks queued before the gateway connects and those produced after come as SSE
    frames over the channel; the model process closes it at the end, whose pull (RPC)
    returns None. The token is single-use."""
    async def main():
        engine = BlockingEngine()
        actor = await loaded_actor(engine)
        await actor.start_channel("127.0.0.1")
        handle = await actor.chat([], {"stream": True, "n": 4})
        assert handle.channel.startswith("127.0.0.1:") and len(handle.token) == 32
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)
        reading = asyncio.ensure_future(_channel_read(handle))
        await asyncio.sleep(0.2)
        engine.gate.set()
        got = await reading
        assert got == b"".join(b'data: {"i":%d}\n\n' % i for i in range(4))
        assert await actor.next_sse(handle.stream_id) is None
        # used tokens and unknown ones get nothing and the connection is closed
        assert await _channel_read(handle) == b""
        actor._channel.close()

    asyncio.run(main())


def test_a_stream_channel_error_is_raised_by_the_pull_after_the_frames_before_it():
    async def main():
        engine = BlockingEngine()
        engine.gate.set()
        actor = await loaded_actor(engine)
        await actor.start_channel("127.0.0.1")
        handle = await actor.chat([], {"stream": True, "n": 5, "fail_at": 2})
        assert await _channel_read(handle) == b'data: {"i":0}\n\ndata: {"i":1}\n\n'
        with pytest.raises(ValueError, match="engine broke"):
            await actor.next_sse(handle.stream_id)
        actor._channel.close()

    asyncio.run(main())


def test_a_quiet_stream_channel_sends_keep_alives_and_a_dropped_one_falls_back_to_pulls():
    """Without a frame for ``ping`` seconds the channel sends an SSE comment; when the
    gateway drops the channel, later chunks queue for RPC pulls (nothing is lost)."""
    async def main():
        engine = BlockingEngine()
        actor = await loaded_actor(engine)
        await actor.start_channel("127.0.0.1")
        handle = await actor.chat([], {"stream": True, "n": 3})
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)
        reader, writer = await _channel_open(handle, 1)
        assert await asyncio.wait_for(reader.readexactly(15), 5) == b'data: {"i":0}\n\n'
        assert await asyncio.wait_for(reader.readexactly(8), 5) == b": ping\n\n"
        writer.close()
        await asyncio.sleep(0.2)  # the model process sees the channel end
        engine.gate.set()
        assert await _pull_rest(actor, handle.stream_id) == \
            b'data: {"i":1}\n\ndata: {"i":2}\n\n'
        actor._channel.close()

    asyncio.run(main())


def test_a_stream_channel_ignores_garbage_and_unknown_tokens():
    async def main():
        actor = await loaded_actor(BlockingEngine())
        addr = await asyncio.wait_for(actor.start_channel("127.0.0.1"), 5) or \
            actor._channel.address
        host, port = addr.rsplit(":", 1)
        for line in (b"0" * 32 + b" 15\n", b"x" * 300 + b"\n", b"no-ping\n"):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(line)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
        actor._channel.close()

    asyncio.run(main())


def test_an_unreachable_stream_channel_is_skipped_and_not_retried_at_once():
    """The gateway's side: a channel that refuses the connection leaves the stream to the
    RPC pulls, and its address is not tried again for a while."""
    import socket

    from xinference.api import gateway

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    stream = ModelStream("sid", f"127.0.0.1:{port}", "0" * 32)

    async def main():
        assert await gateway._open_channel(stream) is None
        assert stream.channel in gateway._unreachable
        before = gateway._unreachable[stream.channel]
        assert await gateway._open_channel(stream) is None
        assert gateway._unreachable[stream.channel] == before  # skipped, not tried again

    try:
        asyncio.run(main())
    finally:
        gateway._unreachable.pop(stream.channel, None)


# ---- push mode: chunks written from the engine's thread ----------------------------------
class PushEngine(OpenAIStreams):
    """An LLM-like engine whose streams are the real :class:`ChunkStream` over an
    :class:`AsyncDeltaStream`: ``chat`` returns it at once and a thread emits ``n`` text
    deltas (after ``gate``), the last with ``finish_reason``; ``fail_at`` emits an error
    there instead."""

    def __init__(self):
        self.gate = threading.Event()
        self.threads = set()  # the threads that built the chunks

    async def chat(self, messages, config):
        from xinference.model.llm.request import AsyncDeltaStream, Delta
        from xinference.model.llm.responses import CompletionBuilder

        n = int(config.get("n", 5))
        deltas = AsyncDeltaStream(1)
        builder = CompletionBuilder("m", include_usage=False)
        chunks = builder.chunks

        def recording(d):  # the thread that builds each chunk
            self.threads.add(threading.get_ident())
            return chunks(d)

        builder.chunks = recording

        def produce():
            self.gate.wait(5)
            for i in range(n):
                if config.get("fail_at") == i:
                    deltas.emit(ValueError("engine broke"))
                    return
                deltas.emit([Delta(f"t{i} ", "stop" if i == n - 1 else None)])

        threading.Thread(target=produce, daemon=True).start()
        return builder.astream(deltas)


def _texts(sse: bytes):
    import json

    return [json.loads(line[6:])["choices"][0]["text"]
            for line in sse.split(b"\n\n") if line.startswith(b"data: ")]


def test_pushed_chunks_go_from_the_engine_thread_to_the_channel_in_order():
    """Once the gateway is attached, the chunks are built and written in the emitting
    thread: the loop is not woken per token (a few wake-ups for 300 tokens), every frame
    arrives in order, and the end still comes by the final pull."""
    async def main():
        engine = PushEngine()
        actor = await loaded_actor(engine)
        await actor.start_channel("127.0.0.1")
        handle = await actor.chat([], {"stream": True, "n": 300})
        loop = asyncio.get_running_loop()
        reading = asyncio.ensure_future(_channel_read(handle))
        await asyncio.sleep(0.2)  # attached, in push mode
        calls = []
        real = loop.call_soon_threadsafe
        loop.call_soon_threadsafe = lambda cb, *a, **kw: (calls.append(cb), real(cb, *a, **kw))[1]
        engine.gate.set()
        got = await reading
        assert _texts(got) == [f"t{i} " for i in range(300)]
        assert await actor.next_sse(handle.stream_id) is None
        assert len(calls) < 10  # the end (and the engine thread's own), not one per token
        assert threading.get_ident() not in engine.threads
        actor._channel.close()

    asyncio.run(main())


def test_an_engine_error_while_pushing_ends_the_channel_and_is_raised_by_the_pull():
    """In push mode an engine error goes to the event loop: the channel closes after the
    chunks pushed before it, and the final pull raises the error."""
    async def main():
        engine = PushEngine()
        actor = await loaded_actor(engine)
        await actor.start_channel("127.0.0.1")
        handle = await actor.chat([], {"stream": True, "n": 50, "fail_at": 40})
        reading = asyncio.ensure_future(_channel_read(handle))
        await asyncio.sleep(0.2)  # attached before the engine starts: every chunk pushed
        engine.gate.set()
        assert _texts(await reading) == [f"t{i} " for i in range(40)]
        assert threading.get_ident() not in engine.threads
        with pytest.raises(ValueError, match="engine broke"):
            await actor.next_sse(handle.stream_id)
        actor._channel.close()

    asyncio.run(main())


def test_pushed_chunks_after_the_channel_drops_go_to_the_pulls():
    """The gateway drops the channel mid-stream: the chunks the engine thread pushes
    after that are queued for RPC pulls, in order; nothing is lost or doubled."""
    async def main():
        engine = PushEngine()
        actor = await loaded_actor(engine)
        await actor.start_channel("127.0.0.1")
        handle = await actor.chat([], {"stream": True, "n": 6})
        _, writer = await _channel_open(handle)
        await asyncio.sleep(0.2)  # attached, in push mode
        writer.close()
        await asyncio.sleep(0.2)  # the model process sees the channel end
        engine.gate.set()
        assert _texts(await _pull_rest(actor, handle.stream_id)) == \
            [f"t{i} " for i in range(6)]
        actor._channel.close()

    asyncio.run(main())


def test_a_channel_writer_falls_back_to_the_transport_when_the_socket_is_full():
    """Frames sent from another thread faster than the reader takes them: once the
    socket's buffer is full the rest goes through the transport, in order, none lost."""
    from xinference.core.stream_channel import ChannelWriter

    async def main():
        accepted = asyncio.get_running_loop().create_future()
        server = await asyncio.start_server(
            lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        _, model_side = await accepted
        chan = ChannelWriter(model_side.transport)
        assert chan.go_direct()
        frames = [b"data: %06d %s\n\n" % (i, b"x" * 4000) for i in range(2000)]  # ~8 MB
        sent = threading.Thread(target=lambda: [chan.write(f) for f in frames])
        sent.start()
        got = bytearray()
        while len(got) < sum(map(len, frames)):
            got += await asyncio.wait_for(reader.read(1 << 16), 10)
        sent.join()
        assert bytes(got) == b"".join(frames)
        assert chan._sock is None  # the full buffer ended direct sending
        chan.close()
        assert not chan.write(b"late")
        writer.close()
        server.close()

    asyncio.run(main())
