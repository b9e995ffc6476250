"""Dynamic batching: the batcher's scheduling rules, and the real embedding engine (loaded in
this process on the packaged all-MiniLM weights) gathering concurrent requests."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from xinference.errors import InvalidRequestError
from xinference.model.embedding.batching import DynamicBatcher

from .conftest import load_embedding_engine, minilm_dir


def run(coro):
    return asyncio.run(coro)


# ---- the batcher's rules, on a plain function ------------------------------------------------
def test_concurrent_requests_share_calls_within_bounds():
    calls = []

    def square(key, items):
        calls.append(len(items))
        return [x * x for x in items]

    async def main():
        b = DynamicBatcher(square, max_batch_size=8, max_wait_s=0.05)
        out = await asyncio.gather(*[b.submit([i]) for i in range(20)])
        big = await b.submit(list(range(11)))  # larger than a batch: runs alone, whole
        b.shutdown()
        return out, big, b.stats

    out, big, stats = run(main())
    assert out == [[i * i] for i in range(20)]
    assert big == [i * i for i in range(11)]
    assert calls[:3] == [8, 8, 4] and calls[3] == 11
    assert stats == {"batches": 4, "items": 31, "max_items": 11}


def test_keys_never_share_a_batch_and_order_is_kept():
    seen = []

    def tag(key, items):
        seen.append((key, list(items)))
        return [f"{key}:{x}" for x in items]

    async def main():
        b = DynamicBatcher(tag, max_batch_size=32, max_wait_s=0.05)
        reqs = [b.submit([i, i + 100], key="ab"[i % 2]) for i in range(6)]
        out = await asyncio.gather(*reqs)
        b.shutdown()
        return out

    out = run(main())
    assert out == [[f"{'ab'[i % 2]}:{i}", f"{'ab'[i % 2]}:{i + 100}"] for i in range(6)]
    for key, items in seen:  # a call holds one key's items only
        assert {"ab"[(x % 100) % 2] for x in items} == {key}
    assert sorted(k for k, _ in seen) == ["a", "b"]  # one call per key


def test_an_error_reaches_every_request_of_its_batch_and_the_next_batch_runs():
    def fail_on_negative(key, items):
        if any(x < 0 for x in items):
            raise ValueError("negative")
        return items

    async def main():
        b = DynamicBatcher(fail_on_negative, max_batch_size=4, max_wait_s=0.05)
        first = await asyncio.gather(b.submit([1]), b.submit([-1]), return_exceptions=True)
        after = await b.submit([5])
        b.shutdown()
        return first, after

    first, after = run(main())
    assert all(isinstance(e, ValueError) for e in first)
    assert after == [5]


def test_a_cancelled_request_does_not_disturb_others():
    gate = threading.Event()

    def slow(key, items):
        gate.wait(5)
        return items

    async def main():
        b = DynamicBatcher(slow, max_batch_size=2, max_wait_s=0.0)
        t1 = asyncio.ensure_future(b.submit([1]))
        await asyncio.sleep(0.01)  # batch [1] is running
        t2 = asyncio.ensure_future(b.submit([2]))
        t3 = asyncio.ensure_future(b.submit([3]))
        await asyncio.sleep(0.01)
        t2.cancel()
        gate.set()
        res = await asyncio.gather(t1, t3)
        b.shutdown()
        return res, t2.cancelled()

    res, cancelled = run(main())
    assert res == [[1], [3]] and cancelled


def test_a_request_right_after_the_last_batch_is_served():
    # The worker that ran the last batch is done but still registered until its callback
    # runs; a request arriving in between must still get a worker (it used to wait forever).
    async def main():
        b = DynamicBatcher(lambda key, items: items, max_batch_size=4, max_wait_s=0.0)
        out = []
        for i in range(20):
            out.append(await b.submit([i]))  # awaited directly: no extra scheduling hop
        b.shutdown()
        return out

    assert run(asyncio.wait_for(main(), 10)) == [[i] for i in range(20)]


def test_concurrent_batches_run_side_by_side_and_share_a_burst():
    both_inside = threading.Barrier(2, timeout=5)  # breaks unless two calls overlap
    sizes = []

    def fn(key, items):
        sizes.append(len(items))
        both_inside.wait()
        return [x + 1 for x in items]

    async def main():
        b = DynamicBatcher(fn, max_batch_size=32, max_wait_s=0.01, concurrency=2)
        out = await asyncio.gather(*[b.submit([i]) for i in range(16)])
        b.shutdown()
        return out

    assert run(main()) == [[i + 1] for i in range(16)]
    assert sorted(sizes) == [8, 8]  # the burst is split between the two free workers


# ---- the real engine ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine():
    return load_embedding_engine("mini-inproc", batch_wait_ms=20)


@pytest.fixture(scope="module")
def ref(engine):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_dir(), device="cpu")


def test_engine_gathers_concurrent_requests(engine, ref):
    sentences = [f"sentence {i} on {'cats' if i % 2 else 'ships'}" for i in range(64)]
    before = engine.batch_stats()

    async def main():
        return await asyncio.gather(*[engine.create_embedding(s) for s in sentences])

    outs = run(main())
    after = engine.batch_stats()
    got = np.array([o["data"][0]["embedding"] for o in outs], dtype=np.float32)
    np.testing.assert_allclose(got, ref.encode(sentences), atol=1e-5)
    calls = after["batches"] - before["batches"]
    assert after["items"] - before["items"] == 64
    # 64 requests arrive in one burst: they are gathered into a few large batches (two of
    # 32 here), not served one by one or in pairs, and never more than max_batch_size (32)
    assert 2 <= calls <= 8, calls
    assert 8 <= after["max_items"] <= 32, after


def test_engine_prompts_are_batched_apart(engine, ref):
    texts = ["what is a cat?", "ships sail"]

    async def main():
        return await asyncio.gather(
            engine.create_embedding(texts[0], prompt="query: "),
            engine.create_embedding(texts[1]),
        )

    with_prompt, without = run(main())
    np.testing.assert_allclose(with_prompt["data"][0]["embedding"],
                               ref.encode(texts[0], prompt="query: "), atol=1e-5)
    np.testing.assert_allclose(without["data"][0]["embedding"], ref.encode(texts[1]),
                               atol=1e-5)
    n = len(ref.tokenizer("query: " + texts[0])["input_ids"])
    assert with_prompt["usage"]["prompt_tokens"] == n


def test_engine_bad_request_does_not_fail_its_neighbours(engine, ref):
    async def main():
        return await asyncio.gather(engine.create_embedding("good one"),
                                    engine.create_embedding(""),
                                    return_exceptions=True)

    good, bad = run(main())
    assert isinstance(bad, InvalidRequestError)
    np.testing.assert_allclose(good["data"][0]["embedding"], ref.encode("good one"),
                               atol=1e-5)
