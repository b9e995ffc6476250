"""Abort in the ModelActor, driven directly (no pool, no weights), for both kinds of engine:
a blocking one (the llama.cpp kind: a ``cancel`` event) and an async one (task
cancellation, the Transformers kind)."""

from __future__ import annotations

import asyncio

import pytest

from xinference.errors import ConflictError, RequestAbortedError, RequestNotFoundError

from .test_model_streams import AsyncEngine, BlockingEngine, loaded_actor


class ChunkyBlockingEngine(BlockingEngine):
    """Chat chunks shaped like OpenAI's; a non-stream call waits on the cancel event."""

    def chat(self, messages, config, cancel):
        if not config.get("stream"):
            self.started.set()
            cancel.wait(10)
            return {"cancelled": cancel.is_set()}

        def chunks():
            for i in range(1000):
                if i == 1:
                    self.started.set()
                    self.gate.wait(5)
                if cancel.is_set():
                    return
                self.produced += 1
                yield {"id": "chat-1", "object": "chat.completion.chunk", "created": 1,
                       "model": "m", "choices": [{"index": 0, "delta": {"content": str(i)},
                                                  "finish_reason": None}]}
        return chunks()


async def _pull_all(actor, sid):
    out = []
    while True:
        chunks = await actor.next_chunks(sid)
        if chunks is None:
            return out
        out.extend(chunks)


def test_abort_blocking_stream_ends_with_abort_chunk():
    async def main():
        engine = ChunkyBlockingEngine()
        actor = await loaded_actor(engine)
        handle = await actor.chat([], {"stream": True, "request_id": "r1"})
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)
        with pytest.raises(ConflictError):
            await actor.chat([], {"stream": True, "request_id": "r1"})
        assert actor.abort_request("r1")["aborted"] is True
        engine.gate.set()
        chunks = await _pull_all(actor, handle.stream_id)
        assert chunks[-1]["choices"][0]["finish_reason"] == "abort"
        assert chunks[-1]["id"] == "chat-1" and chunks[-1]["choices"][0]["delta"] == {"content": ""}
        assert len(chunks) <= 3
        # The engine thread stopped and released the engine: the next call runs.
        await asyncio.sleep(0.1)
        assert engine.produced < 1000
        with pytest.raises(RequestNotFoundError):
            actor.abort_request("r1")
        assert actor.describe()["admitted_requests"] == 0

    asyncio.run(main())


def test_abort_blocking_non_stream_call():
    async def main():
        engine = ChunkyBlockingEngine()
        actor = await loaded_actor(engine)
        call = asyncio.ensure_future(actor.chat([], {"request_id": "r2"}))
        await asyncio.get_running_loop().run_in_executor(None, engine.started.wait, 5)
        actor.abort_request("r2")
        with pytest.raises(RequestAbortedError, match="r2"):
            await asyncio.wait_for(call, 5)
        assert actor.describe()["admitted_requests"] == 0
        m = (await actor.get_metrics())["stats"]
        assert m["requests"] == 1 and m["aborted"] == 1 and m["errors"] == 0

    asyncio.run(main())


def test_abort_async_stream_closes_the_engine_iterator():
    async def main():
        engine = AsyncEngine()
        actor = await loaded_actor(engine)
        handle = await actor.chat([], {"stream": True, "request_id": "r3"})
        got = []
        while len(got) < 3:
            got.extend(await actor.next_chunks(handle.stream_id))
        actor.abort_request("r3")
        rest = await _pull_all(actor, handle.stream_id)
        assert rest[-1]["choices"][0]["finish_reason"] == "abort"
        assert rest[-1]["object"] == "chat.completion.chunk"  # no shape seen: the method's
        await asyncio.wait_for(engine.closed.wait(), 5)
        await asyncio.sleep(0)
        assert actor.describe()["admitted_requests"] == 0

    asyncio.run(main())
