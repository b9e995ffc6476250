"""Unit tests (no server) of the retrieval-model parts: family fields, launch planning,
request parsing, prompt choice, ``dimensions``, and the LLM rerankers' prompt formats on
SmolLM2's real tokenizer."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from xinference.errors import InvalidRequestError
from xinference.model.embedding.family import EmbeddingModelFamily, builtin_embedding_families
from xinference.model.embedding.launch import launchable_specs, plan_embedding_launch
from xinference.model.embedding.request import EmbeddingEngine, parse_embedding_input
from xinference.model.rerank.family import RerankModelFamily, builtin_rerank_families
from xinference.model.rerank.launch import plan_rerank_launch

BASE = {"model_name": "x", "dimensions": 64, "model_uri": "/m"}


@pytest.mark.parametrize("extra, words", [
    ({"min_dimensions": 65}, "min_dimensions"),
    ({"instruction_template": "Instruct: task"}, "{instruction}"),
    ({"modalities": ["image"]}, "text"),
    ({"pooling": "last_token", "modalities": ["text", "image"]}, "text only"),
    ({"pooling": "mean"}, "pooling"),
])
def test_family_rules(extra, words):
    with pytest.raises(ValidationError, match=words.replace("{", r"\{").replace("}", r"\}")):
        EmbeddingModelFamily.model_validate(dict(BASE, **extra))


def test_catalog_entries_and_engines():
    emb = builtin_embedding_families()
    for name, dims in (("Qwen3-Embedding-0.6B", 1024), ("Qwen3-Embedding-4B", 2560),
                       ("Qwen3-Embedding-8B", 4096), ("gte-Qwen2", 3584)):
        fam = emb[name]
        assert fam.dimensions == dims and fam.pooling == "last_token"
        assert [s.model_hub for s in fam.model_specs] == ["huggingface", "modelscope"]
        assert [s.model_hub for s in launchable_specs(fam)] == ["huggingface"]
        _, desc = plan_embedding_launch(fam, "u")
        assert desc["model_engine"] == "transformers"
    assert emb["Qwen3-Embedding-0.6B"].model_specs[0].model_id == "Qwen/Qwen3-Embedding-0.6B"
    assert emb["gte-Qwen2"].trust_remote_code
    assert emb["clip-ViT-B-32"].modalities == ["text", "image"]
    rr = builtin_rerank_families()
    assert rr["Qwen3-Reranker-0.6B"].llm_format == "qwen3"
    assert rr["bge-reranker-v2-gemma"].llm_format == "bge-llm"
    _, desc = plan_rerank_launch(rr["Qwen3-Reranker-4B"], "u")
    assert desc["model_engine"] == "transformers" and desc["llm_format"] == "qwen3"
    _, desc = plan_rerank_launch(rr["bge-reranker-v2-m3"], "u")
    assert desc["model_engine"] == "sentence_transformers"


def test_launch_refusals():
    fam = builtin_embedding_families()["Qwen3-Embedding-0.6B"]
    with pytest.raises(InvalidRequestError, match="transformers"):
        plan_embedding_launch(fam, "u", model_engine="sentence_transformers")
    with pytest.raises(InvalidRequestError, match="torch_dtype"):
        plan_embedding_launch(fam, "u", torch_dtype="int3")
    with pytest.raises(InvalidRequestError, match="padding_free"):
        plan_embedding_launch(fam, "u", padding_free=True)  # a sentence-transformers option
    layerwise = RerankModelFamily.model_validate(
        {"model_name": "lw", "type": "LLM-based layerwise", "model_uri": "/m"})
    with pytest.raises(InvalidRequestError, match="layerwise"):
        plan_rerank_launch(layerwise, "u")
    custom = RerankModelFamily.model_validate(
        {"model_name": "c", "type": "LLM-based", "model_uri": "/m"})
    assert custom.llm_format == "bge-llm"  # FlagEmbedding's format, upstream's default


def test_parse_input_shapes():
    assert parse_embedding_input({"text": "a"}) == ("mixed", [("text", "a")])
    kind, items = parse_embedding_input(["a", {"image": "data:image/png;base64,AA"}])
    assert kind == "mixed" and items == [("text", "a"), ("image", "data:image/png;base64,AA")]
    assert parse_embedding_input(["a", "b"]) == ("text", ["a", "b"])
    for bad, words in [([{"text": ""}], "non-empty"), ([{"text": "a", "image": "b"}], "one of"),
                       ([{"image": 3}], "non-empty string"), ([1, "a"], "input"),
                       ([{"text": "a", "x": 1}], "input[0]")]:
        with pytest.raises(InvalidRequestError, match=words.replace("[", r"\[")):
            parse_embedding_input(bad)


class _Engine(EmbeddingEngine):
    def __init__(self, **fam):
        self._family = EmbeddingModelFamily.model_validate(dict(BASE, **fam))
        self._model_uid = "e"
        self.dimensions = 64


def test_prompt_choice_and_dimensions():
    e = _Engine(prompts={"query": "Q: ", "document": ""},
                instruction_template="Instruct: {instruction}\nQuery:", min_dimensions=8)
    assert e.prompt_prefix(None, None, None) == ""
    assert e.prompt_prefix("query", None, None) == "Q: "
    assert e.prompt_prefix(None, "raw ", None) == "raw "
    assert e.prompt_prefix(None, None, "find") == "Instruct: find\nQuery:"
    with pytest.raises(InvalidRequestError, match="at most one"):
        e.prompt_prefix("query", None, "find")
    with pytest.raises(InvalidRequestError, match="Unknown prompt_name"):
        e.prompt_prefix("passage", None, None)
    assert e.check_dimensions(8) == 8 and e.check_dimensions(64) == 64
    for bad in (7, 65):
        with pytest.raises(InvalidRequestError, match="8..64"):
            e.check_dimensions(bad)
    plain = _Engine(matryoshka_dimensions=[32])
    with pytest.raises(InvalidRequestError, match="takes no 'instruction'"):
        plain.prompt_prefix(None, None, "find")
    assert plain.check_dimensions(32) == 32
    with pytest.raises(InvalidRequestError, match=r"\[32, 64\]"):
        plain.check_dimensions(16)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from .rag_helpers import smollm2_export

    t = AutoTokenizer.from_pretrained(str(smollm2_export()))
    t.add_tokens(["<think>", "</think>"])
    return t


def test_qwen3_format(tok):
    from xinference.model.rerank.llm_formats import Qwen3RerankFormat, make_format

    fmt = make_format("qwen3", tok)
    ids = fmt.pair_ids("what?", "an answer", None, 512)
    text = tok.decode(ids)
    assert text.startswith(Qwen3RerankFormat.PREFIX)
    assert text.endswith(Qwen3RerankFormat.SUFFIX)
    assert f"<Instruct>: {fmt.default_instruction}\n<Query>: what?\n<Document>: an answer" \
        in text
    assert "<Instruct>: mine\n" in tok.decode(fmt.pair_ids("q", "d", "mine", 512))
    # a long document is cut, the closing turn stays; the budget fits
    long_ids = fmt.pair_ids("q", "word " * 500, None, 120)
    assert len(long_ids) == 120 and tok.decode(long_ids).endswith(Qwen3RerankFormat.SUFFIX)
    budget = fmt.doc_budget("q", None, 120)
    assert 0 < budget and len(fmt.pair_ids("q", " word" * (budget - 1), None, 10**4)) <= 121
    assert fmt.score_token_ids == [tok.convert_tokens_to_ids("no"),
                                   tok.convert_tokens_to_ids("yes")]
    with pytest.raises(ValueError, match="llm_format"):
        make_format("nope", tok)


def test_bge_llm_format(tok):
    from xinference.model.rerank.llm_formats import make_format

    fmt = make_format("bge-llm", tok)
    ids = fmt.pair_ids("what?", "an answer", None, 512)
    assert ids[0] == tok.bos_token_id
    assert tok.decode(ids[1:]) == f"A: what?\nB: an answer\n{fmt.default_instruction}"
    cut = fmt.pair_ids("q " * 400, "p " * 400, "Yes or No?", 100)
    prompt = tok("\nYes or No?", add_special_tokens=False)["input_ids"]
    assert cut[-len(prompt):] == prompt and len(cut) == 100 + len(prompt)
    assert fmt.score_token_ids == [tok("Yes", add_special_tokens=False)["input_ids"][0]]
