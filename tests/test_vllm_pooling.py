"""LLM-based embeddings and rerankers on the vLLM engine (issue 23, item 2): planning and
the engine table without vLLM; end to end, tiny random-weight models shaped like
Qwen3-Embedding, Qwen3-Reranker and bge-reranker-v2-gemma (``tests/rag_helpers.py``,
``head_dim=32``: vLLM's CPU attention takes no smaller heads) launched on vLLM's CPU
build through a real server, read through the OpenAI SDK, the project's client and plain
HTTP.

Every vector and score must equal an in-process computation of the model card's method
(the ``Card*`` classes of ``tests/test_llm_embedding_rerank.py``, on Transformers) to
1e-4; measured here, float32 on the CPU: within 2e-7 for vectors and P("yes"), 1.3e-6
for the raw "Yes" logit. The prompts, token
rows and score formulas are the ones the Transformers engine uses (shared code), so the
same requests give the same numbers on both engines.

The end-to-end part needs the vLLM engine's environment prepared (see
``tests/test_vllm.py``); without it those tests skip, saying so. One launch per model,
one model at a time (a class each, with a 1 GiB CPU KV cache), terminated after its
class with its EngineCore and worker processes checked gone.
"""

from __future__ import annotations

import asyncio
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from xinference.client import RESTfulClient
from xinference.errors import InvalidRequestError

from .rag_helpers import (build_gemma_reranker, build_gte_qwen2, build_qwen3_embedding,
                          build_qwen3_reranker)
from .test_llm_embedding_rerank import (DOCS, EMB_FAMILY, QUERY, TASK, TEXTS, CardBgeGemma,
                                        CardEmbedding, CardQwen3Reranker, query_text)
from .test_vllm import VLLM_CLASS, _prepared_vllm_env, _venv_dir, terminate_and_check

TOL = 1e-4
EMB_CLASS = "xinference.model.embedding.vllm_embedding:VLLMEmbedding"
RERANK_CLASS = "xinference.model.rerank.vllm_rerank:VLLMRerank"
QWEN3_RERANKER = {"model_name": "tiny-qwen3-reranker", "type": "LLM-based",
                  "llm_format": "qwen3", "max_tokens": 256}
GTE_FAMILY = {"model_name": "tiny-gte-qwen2", "dimensions": 64, "max_tokens": 128,
              "pooling": "last_token", "bidirectional_attention": True,
              "prompts": {"query": f"Instruct: {TASK}\nQuery: ", "document": ""},
              "instruction_template": "Instruct: {instruction}\nQuery: "}
GEMMA_RERANKER = {"model_name": "tiny-gemma-reranker", "type": "LLM-based",
                  "llm_format": "bge-llm", "max_tokens": 256}


# ---- planning and the engine table (no vLLM needed) -------------------------------------
def _plan(model_type: str, name: str, **kw):
    from xinference.model import model_type_handlers

    handler = model_type_handlers()[model_type]
    return handler.plan(handler.builtins()[name], "u", **kw)


@pytest.mark.parametrize("model_type,name,cls", [
    ("embedding", "Qwen3-Embedding-0.6B", EMB_CLASS),
    ("embedding", "gte-Qwen2-1.5B-instruct", EMB_CLASS),
    ("rerank", "Qwen3-Reranker-0.6B", RERANK_CLASS),
    ("rerank", "bge-reranker-v2-gemma", RERANK_CLASS)])
def test_llm_based_families_launch_on_vllm_by_name(model_type, name, cls):
    for engine in ("vLLM", "vllm"):
        loader, desc = _plan(model_type, name, model_engine=engine, max_model_len=2048,
                             cpu_kvcache_space=1)
        assert loader.engine_class == cls and desc["model_engine"] == "vLLM"
        assert not loader.uses_torch  # vLLM sets its CPU threads up itself
    # the default engine stays Transformers
    assert _plan(model_type, name)[1]["model_engine"] == "transformers"


@pytest.mark.parametrize("option,value", [
    ("max_batch_size", 8),  # the Transformers engine's: vLLM batches by itself
    ("torch_dtype", "float32"), ("dtype", "int3"), ("max_model_len", 0),
    ("lora_modules", {"a": "/p"}), ("enable_prefix_caching", True),
    ("gpu_memory_utilization", 2)])
def test_bad_or_foreign_option_is_a_400_naming_it(option, value):
    with pytest.raises(InvalidRequestError) as e:
        _plan("embedding", "Qwen3-Embedding-0.6B", model_engine="vLLM", **{option: value})
    assert option in e.value.message


def test_cross_encoders_have_no_vllm_engine():
    with pytest.raises(InvalidRequestError, match="not available.*sentence_transformers"):
        _plan("rerank", "bge-reranker-base", model_engine="vLLM")
    with pytest.raises(InvalidRequestError, match="not available"):
        _plan("embedding", "all-MiniLM-L6-v2", model_engine="vLLM")


def test_engines_listed_and_one_environment_for_every_vllm_engine():
    """``/v1/engines`` lists vLLM for LLM-based families; the pooling engines declare the
    LLM engine's packages, so they resolve to the same environment (no second 3 GB env)."""
    from xinference.model import model_type_handlers
    from xinference.model import virtualenv as venv

    for model_type, name in (("embedding", "Qwen3-Embedding-0.6B"),
                             ("rerank", "Qwen3-Reranker-0.6B")):
        handler = model_type_handlers()[model_type]
        table = handler.engines(handler.builtins()[name])
        assert list(table) == ["transformers", "vLLM"]
        assert table["vLLM"][0]["virtualenv"] and not table["transformers"][0]["virtualenv"]

    def key(cls, has_cuda):
        plan = venv.plan_for_engine(cls)
        return venv.env_key(venv.resolve_requirements(plan, has_cuda),
                            excludes=venv.resolve_excludes(plan, has_cuda))

    for has_cuda in (False, True):
        assert key(EMB_CLASS, has_cuda) == key(RERANK_CLASS, has_cuda) \
            == key(VLLM_CLASS, has_cuda)


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("vllm-rag")
    return {"emb": build_qwen3_embedding(root / "emb", head_dim=32),
            "qwen3": build_qwen3_reranker(root / "qwen3", head_dim=32),
            "gemma": build_gemma_reranker(root / "gemma", head_dim=32),
            # Qwen2's head size is hidden / heads: 2 heads of 32
            "gte": build_gte_qwen2(root / "gte", num_attention_heads=2,
                                   num_key_value_heads=1, head_dim=32)}


class CardBidirectional(CardEmbedding):
    """gte-Qwen2's card method (last token, L2-normalised) with its bidirectional
    attention: every token attends to every token (a full ``[1, 1, T, T]`` mask; the
    repository's own code does this for the real model)."""

    def __call__(self, text: str, max_length: int = 8192, causal: bool = False):
        torch = self.torch
        ids = self.tok([text], truncation=True, max_length=max_length,
                       return_tensors="pt")["input_ids"]
        n = ids.shape[1]
        mask = None if causal else torch.zeros(1, 1, n, n)
        with torch.no_grad():
            out = self.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
        return torch.nn.functional.normalize(out, p=2, dim=1)[0].numpy()


@pytest.fixture(scope="module")
def gte_card(paths):
    return CardBidirectional(paths["gte"])


def test_transformers_engine_masks_bidirectionally_for_such_families(paths, gte_card):
    """A ``bidirectional_attention`` family whose weights load with transformers' own
    class: batched and padded, each vector is the bidirectional one (not the causal)."""
    from xinference.model.embedding.family import EmbeddingModelFamily
    from xinference.model.embedding.launch import plan_embedding_launch

    fam = EmbeddingModelFamily.model_validate(dict(GTE_FAMILY, model_uri=paths["gte"]))
    loader, _ = plan_embedding_launch(fam, "gte", max_batch_size=8, batch_wait_ms=50)
    engine = loader.load()
    texts = ["a", "a longer sentence with more words in it", "x y z"]
    out = asyncio.run(engine.create_embedding(texts))
    for t, d in zip(texts, out["data"]):
        np.testing.assert_allclose(d["embedding"], gte_card(t), atol=TOL)
    assert np.abs(out["data"][1]["embedding"] - gte_card(texts[1], causal=True)).max() > 1e-3


def test_classifier_overrides_read_the_formats_score_tokens(paths):
    """What vLLM is asked to build: the causal LM as a classifier of the score tokens
    (vLLM's documented overrides for Qwen3-Reranker and bge-reranker-v2-gemma)."""
    import torch
    from transformers import AutoTokenizer

    from xinference.model.rerank.llm_formats import make_format
    from xinference.model.rerank.vllm_rerank import classifier_overrides

    tok = AutoTokenizer.from_pretrained(paths["qwen3"])
    fmt = make_format("qwen3", tok)
    overrides, cap = classifier_overrides(paths["qwen3"], tok, fmt)
    assert overrides == {"architectures": ["Qwen3ForSequenceClassification"],
                         "classifier_from_token": ["no", "yes"],
                         "method": "from_2_way_softmax"} and cap is None
    # [0, yes - no] gives the card's softmax over [no, yes]
    no_yes = torch.tensor([[1.5, -0.25], [-3.0, 2.0]])
    d = (no_yes[:, 1] - no_yes[:, 0])[:, None]
    torch.testing.assert_close(fmt.score(fmt.classifier_logits(d)), fmt.score(no_yes))

    tok = AutoTokenizer.from_pretrained(paths["gemma"])
    overrides, _ = classifier_overrides(paths["gemma"], tok, make_format("bge-llm", tok))
    assert overrides == {"architectures": ["GemmaForSequenceClassification"],
                         "classifier_from_token": ["Yes"], "method": "no_post_processing"}


# ---- end to end on vLLM ----------------------------------------------------------------
@pytest.fixture(scope="module")
def pool_server(tmp_path_factory):
    """A server whose environments are the test cache's (the prepared vLLM one)."""
    from tests.conftest import Server

    env_path, why = _prepared_vllm_env()
    if env_path is None:
        pytest.skip(why)
    srv = Server(tmp_path_factory.mktemp("vllm-pool-home"),
                 env={"XINFERENCE_VIRTUAL_ENV_DIR": str(_venv_dir())})
    srv.env_path = env_path
    yield srv
    srv.stop()


def _launched(srv, model_type: str, family: dict):
    """Register ``family`` and launch it on vLLM; yields its uid, then terminates it (its
    processes checked gone) and unregisters it."""
    ep = srv.endpoint
    r = requests.post(f"{ep}/v1/model_registrations/{model_type}", timeout=30,
                      json={"model": json.dumps(family), "persist": False})
    assert r.status_code == 200, r.text
    uid = family["model_name"]
    t0 = time.monotonic()
    r = requests.post(f"{ep}/v1/models", timeout=900, json={
        "model_uid": uid, "model_name": uid, "model_type": model_type,
        "model_engine": "vLLM", "n_gpu": None, "cpu_kvcache_space": 1})
    assert r.status_code == 200, f"{r.text}\n{srv.log()[-4000:]}"
    srv.launch_seconds = time.monotonic() - t0
    try:
        yield uid
    finally:
        terminate_and_check(ep, uid)
        RESTfulClient(ep).unregister_model(model_type, uid)


def _openai(endpoint):
    import openai

    return openai.Client(api_key="not empty", base_url=endpoint + "/v1", max_retries=0)


def _post(endpoint, route, **body):
    return requests.post(f"{endpoint}/v1/{route}", json=body, timeout=60)


def _launch_fixture(model_type: str, family: dict, key: str):
    """A class-scoped fixture launching ``family`` (weights ``paths[key]``) on vLLM: one
    model at a time, each launch ends with its class."""
    @pytest.fixture(scope="class")
    def launched(pool_server, paths):
        yield from _launched(pool_server, model_type,
                             dict(family, model_uri="file://" + paths[key]))
    return launched


emb = _launch_fixture("embedding", EMB_FAMILY, "emb")
gte = _launch_fixture("embedding", GTE_FAMILY, "gte")
qwen3 = _launch_fixture("rerank", QWEN3_RERANKER, "qwen3")
gemma = _launch_fixture("rerank", GEMMA_RERANKER, "gemma")


@pytest.fixture(scope="module")
def card(paths):
    return CardEmbedding(paths["emb"])


@pytest.fixture(scope="module")
def qwen3_card(paths):
    return CardQwen3Reranker(paths["qwen3"])


class TestEmbedding:
    def test_runs_on_vllm_in_its_environment(self, pool_server, emb):
        import psutil

        desc = requests.get(f"{pool_server.endpoint}/v1/models/{emb}", timeout=30).json()
        assert desc["model_engine"] == "vLLM" and desc["dimensions"] == 64
        proc = psutil.Process(desc["replicas"][0]["pid"])
        assert proc.cmdline()[0].startswith(str(pool_server.env_path)), proc.cmdline()
        assert any("EngineCore" in " ".join(c.cmdline()) or c.name().startswith("VLLM")
                   for c in proc.children(recursive=True))

    def test_documents_and_queries_match_the_model_card(self, pool_server, emb, card):
        client = _openai(pool_server.endpoint)
        docs = ["The capital of China is Beijing.",
                "Gravity is a force that attracts two bodies"]
        res = client.embeddings.create(model=emb, input=docs)  # base64 on the wire
        got = np.array([d.embedding for d in res.data])
        np.testing.assert_allclose(got, np.stack([card(t) for t in docs]), atol=TOL)
        assert res.usage.prompt_tokens == sum(len(card.tok(t)["input_ids"]) for t in docs)
        queries = ["What is the capital of China?", "Explain gravity"]
        for extra, task in (({"prompt_name": "query"}, TASK),
                            ({"instruction": "Find code that answers it"},
                             "Find code that answers it")):
            res = client.embeddings.create(model=emb, input=queries, encoding_format="float",
                                           extra_body=extra)
            np.testing.assert_allclose([d.embedding for d in res.data],
                                       np.stack([card(query_text(task, q)) for q in queries]),
                                       atol=TOL)

    def test_token_arrays_embed_as_their_text(self, pool_server, emb, card):
        text = "hello there, general kenobi"
        ids = card.tok(text, add_special_tokens=False)["input_ids"]
        out = _post(pool_server.endpoint, "embeddings", model=emb, input=[ids]).json()
        np.testing.assert_allclose(out["data"][0]["embedding"], card(text), atol=TOL)

    def test_matryoshka_dimensions(self, pool_server, emb, card):
        res = _openai(pool_server.endpoint).embeddings.create(
            model=emb, input="short vectors", dimensions=16)
        full = card("short vectors")[:16]
        np.testing.assert_allclose(res.data[0].embedding, full / np.linalg.norm(full),
                                   atol=TOL)
        for bad in (65, 4):  # over the model's size, under min_dimensions
            r = _post(pool_server.endpoint, "embeddings", model=emb, input="x",
                      dimensions=bad)
            assert r.status_code == 400 and "8..64" in r.json()["detail"], r.text

    def test_truncation_keeps_the_end_token(self, pool_server, emb, card):
        long_text = "word " * 300  # max_tokens is 128
        out = _post(pool_server.endpoint, "embeddings", model=emb,
                    input=[long_text, "short"]).json()
        assert out["usage"]["truncated_inputs"] == [0]
        np.testing.assert_allclose(out["data"][0]["embedding"],
                                   card(long_text, max_length=128), atol=TOL)

    def test_concurrent_requests_each_get_their_own(self, pool_server, emb, card):
        client = _openai(pool_server.endpoint)
        jobs = [[f"document number {i}", f"another text {i} here"] for i in range(6)]

        def run(texts):
            res = client.embeddings.create(model=emb, input=texts)
            return np.array([d.embedding for d in res.data])

        with ThreadPoolExecutor(6) as pool:
            for texts, got in zip(jobs, pool.map(run, jobs)):
                np.testing.assert_allclose(got, np.stack([card(t) for t in texts]),
                                           atol=TOL)

    @pytest.mark.parametrize("body,code,words", [
        ({"input": ""}, 400, "empty"), ({"input": []}, 400, "empty"),
        ({"input": "x", "prompt_name": "passage"}, 400, "prompt_name"),
        ({"input": "x", "prompt_name": "query", "instruction": "y"}, 400, "at most one"),
        ({"input": [{"image": "data:image/png;base64,AAAA"}]}, 400, "text only"),
        ({"input": [[10 ** 7]]}, 400, "vocabulary"), ({"input": [[]]}, 400, "empty"),
        # the request schema's own checks answer 422, as for every engine
        ({"input": "x", "encoding_format": "hex"}, 422, "encoding_format"),
        ({"input": "x", "dimensions": 0}, 422, "dimensions")])
    def test_bad_input_is_refused_naming_it(self, pool_server, emb, body, code, words):
        r = _post(pool_server.endpoint, "embeddings", model=emb, **body)
        assert r.status_code == code and words in r.json()["detail"], r.text


class TestBidirectionalEmbedding:
    def test_gte_shaped_model_attends_both_ways(self, pool_server, gte, gte_card):
        """``bidirectional_attention`` (gte-Qwen2) reaches vLLM: the vectors are those of
        the bidirectional computation, queries with the family's prompt too."""
        client = _openai(pool_server.endpoint)
        texts = ["The capital of China is Beijing.", "Explain gravity"]
        res = client.embeddings.create(model=gte, input=texts)
        got = np.array([d.embedding for d in res.data])
        np.testing.assert_allclose(got, np.stack([gte_card(t) for t in texts]), atol=TOL)
        assert np.abs(got[0] - gte_card(texts[0], causal=True)).max() > 1e-3
        res = client.embeddings.create(model=gte, input=texts[1:],
                                       extra_body={"prompt_name": "query"})
        np.testing.assert_allclose(res.data[0].embedding,
                                   gte_card(f"Instruct: {TASK}\nQuery: {texts[1]}"),
                                   atol=TOL)


class TestQwen3Reranker:
    def test_scores_match_the_model_card(self, pool_server, qwen3, qwen3_card):
        uid, card = qwen3, qwen3_card
        out = RESTfulClient(pool_server.endpoint).get_model(uid).rerank(
            DOCS, QUERY, return_documents=True)
        got = {r["index"]: r["relevance_score"] for r in out["results"]}
        np.testing.assert_allclose([got[i] for i in range(len(TEXTS))],
                                   [card(QUERY, t) for t in TEXTS], atol=TOL)
        scores = [r["relevance_score"] for r in out["results"]]
        assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
        assert out["results"][0]["document"]["text"] == TEXTS[out["results"][0]["index"]]
        task = "Judge whether the passage is about geography"
        top = _post(pool_server.endpoint, "rerank", model=uid, query=QUERY, documents=TEXTS,
                    top_n=2, instruction=task).json()
        assert len(top["results"]) == 2
        for r in top["results"]:
            assert abs(r["relevance_score"] - card(QUERY, TEXTS[r["index"]], task)) < TOL

    def test_concurrent_requests(self, pool_server, qwen3, qwen3_card):
        uid, card = qwen3, qwen3_card
        model = RESTfulClient(pool_server.endpoint).get_model(uid)
        queries = [f"question {i} about {w}" for i, w in enumerate(["cats", "bread", "paris"])]
        with ThreadPoolExecutor(3) as pool:
            outs = list(pool.map(lambda q: model.rerank(TEXTS[:3], q), queries))
        for q, out in zip(queries, outs):
            for r in out["results"]:
                assert abs(r["relevance_score"] - card(q, TEXTS[r["index"]])) < TOL

    def test_long_documents_are_chunked_within_max_tokens(self, pool_server, qwen3):
        out = _post(pool_server.endpoint, "rerank", model=qwen3, query=QUERY,
                    documents=["paris is the capital of france. " * 40, "cats"],
                    max_chunks_per_doc=3).json()
        assert len(out["results"]) == 2
        assert 256 < out["meta"]["tokens"]["input_tokens"] <= 4 * 256

    @pytest.mark.parametrize("body,code,words", [
        ({"query": "", "documents": ["a"]}, 400, "query"),
        ({"query": "q", "documents": []}, 400, "documents"),
        ({"query": "q", "documents": ["a"], "instruction": 3}, 400, "instruction"),
        # the request schema's own checks answer 422, as for every engine
        ({"query": "q", "documents": ["a"], "max_chunks_per_doc": -1}, 422,
         "max_chunks_per_doc"),
        ({"query": "q", "documents": [3]}, 422, "documents.0"),
        ({"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n")])
    def test_bad_input_is_refused_naming_it(self, pool_server, qwen3, body, code, words):
        r = _post(pool_server.endpoint, "rerank", model=qwen3, **body)
        assert r.status_code == code and words in r.json()["detail"], r.text


class TestGemmaReranker:
    def test_scores_are_the_raw_yes_logit_of_the_card(self, pool_server, gemma, paths):
        uid = gemma
        card = CardBgeGemma(paths["gemma"], max_length=256)
        out = RESTfulClient(pool_server.endpoint).get_model(uid).rerank(TEXTS, QUERY)
        got = {r["index"]: r["relevance_score"] for r in out["results"]}
        np.testing.assert_allclose([got[i] for i in range(len(TEXTS))],
                                   [card(QUERY, t) for t in TEXTS], atol=TOL)
        task = "Is passage B about a city? Answer 'Yes' or 'No'."
        top = _post(pool_server.endpoint, "rerank", model=uid, query=QUERY,
                    documents=TEXTS[:2], instruction=task).json()
        for r in top["results"]:
            assert abs(r["relevance_score"] - card(QUERY, TEXTS[r["index"]], task)) < TOL


def test_catalog_marks_gte_qwen2_bidirectional():
    from xinference.model.embedding.family import builtin_embedding_families

    fams = builtin_embedding_families()
    assert fams["gte-Qwen2"].bidirectional_attention
    assert fams["gte-Qwen2-1.5B-instruct"].bidirectional_attention
    assert not fams["Qwen3-Embedding-0.6B"].bidirectional_attention
