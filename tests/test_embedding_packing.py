"""Padding-free batches (xinference/model/embedding/packing.py): the row packing rule, and
packed vectors equal to the padded forward pass of sentence-transformers on small encoders of
each supported kind (random weights, all-MiniLM's WordPiece tokenizer), for both attention
implementations and the pooling modes that read token positions."""

from __future__ import annotations

import numpy as np
import pytest

from xinference.errors import InvalidRequestError
from xinference.model import model_type_handlers
from xinference.model.embedding.packing import PaddingFreeEncoder, pack_rows
from xinference.model.options import flag

from .conftest import load_embedding_engine, minilm_dir

TEXTS = ["a", "cats sit on warm mats", "the quick brown fox jumps over the lazy dog " * 3,
         "ships", "one two three four five six seven", "rivers run to the sea at night"]


# ---- the packing rule -------------------------------------------------------------------------
def test_pack_rows_first_fit_decreasing():
    rows = pack_rows([5, 9, 3, 7, 2], row_tokens=10)
    assert rows == [[1], [3, 2], [0, 4]]  # 9 | 7+3 | 5+2: longest first, first row with room


def test_pack_rows_places_every_input_once_within_the_row_width():
    rng = np.random.default_rng(0)
    lengths = [int(x) for x in rng.integers(1, 40, size=200)]
    rows = pack_rows(lengths, row_tokens=64)
    assert sorted(i for row in rows for i in row) == list(range(200))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)


def test_an_input_longer_than_a_row_gets_its_own():
    assert pack_rows([100, 3, 4], row_tokens=16) == [[0], [2, 1]]


# ---- packed == padded on real encoders -----------------------------------------------------------
def build_encoder(path, model_type: str, attn: str, pooling: str = "mean",
                  padding_side: str = "right"):
    """A 2-layer random encoder of ``model_type`` saved under ``path`` and loaded as a
    SentenceTransformer (Transformer -> Pooling -> Normalize)."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import (
        Normalize,
        Pooling,
        Transformer,
    )
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir())
    tok.padding_side = padding_side
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=32,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=64, max_position_embeddings=130,
                                  initializer_range=0.3)
    torch.manual_seed(7)
    AutoModel.from_config(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    first = Transformer(str(path), max_seq_length=128,
                        model_kwargs={"attn_implementation": attn})
    modules = [first, Pooling(first.get_embedding_dimension(), pooling_mode=pooling),
               Normalize()]
    return SentenceTransformer(modules=modules, device="cpu")


@pytest.mark.parametrize("model_type,attn,pooling,side", [
    ("bert", "sdpa", "mean", "right"),
    ("bert", "eager", "cls", "right"),
    ("bert", "sdpa", "lasttoken", "right"),
    ("xlm-roberta", "sdpa", "mean", "right"),
    ("roberta", "eager", "max", "right"),
])
def test_packed_vectors_equal_padded(tmp_path, model_type, attn, pooling, side):
    import torch

    model = build_encoder(tmp_path, model_type, attn, pooling, side)
    # Rows of 16 tokens: several rows, several inputs in some, one input alone and wider.
    packer = PaddingFreeEncoder.for_model(model, row_tokens=16)
    assert packer is not None
    feats = model.preprocess(TEXTS)
    with torch.inference_mode():
        padded = model(dict(feats))["sentence_embedding"]
        packed = packer.forward(dict(feats))["sentence_embedding"]
    np.testing.assert_allclose(packed.numpy(), padded.numpy(), atol=1e-5)
    np.testing.assert_allclose(packed.numpy(), model.encode(TEXTS), atol=1e-5)


def test_unsupported_encoders_keep_the_padded_pass(tmp_path):
    relative = build_encoder(tmp_path / "rel", "bert", "eager")
    relative[0].auto_model.config.position_embedding_type = "relative_key"
    assert PaddingFreeEncoder.for_model(relative) is None
    distil = build_encoder(tmp_path / "distil", "bert", "sdpa")
    distil[0].auto_model.config.model_type = "distilbert"
    assert PaddingFreeEncoder.for_model(distil) is None
    # BERT numbers left-padded positions from the padding on: packing could not match it.
    left = build_encoder(tmp_path / "left", "bert", "sdpa", padding_side="left")
    assert PaddingFreeEncoder.for_model(left) is None


# ---- the engine ---------------------------------------------------------------------------------
def test_engine_packs_by_default_and_can_be_told_not_to():
    import asyncio

    from sentence_transformers import SentenceTransformer

    packed, padded = load_embedding_engine("pf-on"), load_embedding_engine(
        "pf-off", padding_free="false")
    assert packed._packer is not None and padded._packer is None
    ids = packed._model.tokenizer("token arrays go through the packer too",
                                  add_special_tokens=False)["input_ids"]
    inputs = [TEXTS, [ids, ids[:3]]]

    async def main(engine):
        return [await engine.create_embedding(x) for x in inputs]

    ref = SentenceTransformer(minilm_dir(), device="cpu")
    a, b = asyncio.run(main(packed)), asyncio.run(main(padded))
    for x, y in zip(a, b):
        got = np.array([d["embedding"] for d in x["data"]])
        np.testing.assert_allclose(got, [d["embedding"] for d in y["data"]], atol=1e-5)
        assert x["usage"] == y["usage"]
    np.testing.assert_allclose([d["embedding"] for d in a[0]["data"]], ref.encode(TEXTS),
                               atol=1e-5)


def test_launch_flags_are_parsed_at_launch():
    h = model_type_handlers()["embedding"]
    family = h.builtins()["all-MiniLM-L6-v2"]
    with pytest.raises(InvalidRequestError, match="padding_free"):
        h.plan(family, "x", padding_free="sometimes")
    loader, _ = h.plan(family, "x", padding_free="false", trust_remote_code="false")
    assert loader.kwargs == {"padding_free": False, "trust_remote_code": False}


@pytest.mark.parametrize("value,expected", [(True, True), ("false", False), ("YES", True),
                                            ("off", False), (1, True), (0, False),
                                            (None, None)])
def test_flag_values(value, expected):
    assert flag("opt", value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, 0.5, [True]])
def test_flag_refuses_other_values(value):
    with pytest.raises(InvalidRequestError, match="'opt' must be true or false"):
        flag("opt", value)
