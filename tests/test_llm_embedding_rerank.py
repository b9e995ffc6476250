"""LLM-based embeddings and rerankers on the Transformers engine, end to end.

Tiny random-weight models shaped like Qwen3-Embedding, Qwen3-Reranker and
bge-reranker-v2-gemma (``tests/rag_helpers.py``) are registered with the catalog's own
fields (``pooling``, ``end_token``, ``prompts``, ``instruction_template``,
``min_dimensions``; ``type: "LLM-based"`` with ``llm_format``) and launched on the session
server. Each route's numbers must equal an in-process computation of the model card's
method (written out below, one input at a time) to 1e-4: embeddings through the OpenAI SDK,
rerank through the project's client and plain HTTP. Random weights make the numbers
meaningless as relevance; what is checked is the serving code: prompts, pooling, padding,
batching, truncation to ``dimensions``, the score formula, and the 400s.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from xinference.client import RESTfulClient

from .rag_helpers import build_gemma_reranker, build_qwen3_embedding, build_qwen3_reranker

TOL = 1e-4
TASK = "Given a web search query, retrieve relevant passages that answer the query"
EMB_FAMILY = {
    "model_name": "tiny-qwen3-embedding", "dimensions": 64, "max_tokens": 128,
    "min_dimensions": 8, "pooling": "last_token", "end_token": "<|endoftext|>",
    "prompts": {"query": f"Instruct: {TASK}\nQuery:", "document": ""},
    "instruction_template": "Instruct: {instruction}\nQuery:", "language": ["en"],
}
QUERY = "where is the capital of france?"
DOCS = ["a cat sat on the mat", "dogs bark loudly at night", "paris is the capital of france",
        "berlin is a city in germany", {"text": "bread is baked in an oven"}]
TEXTS = [d["text"] if isinstance(d, dict) else d for d in DOCS]


# ---- the model cards' methods, in process -------------------------------------------
class CardEmbedding:
    """Qwen3-Embedding's model card: left-padded tokenizer, AutoModel, last-token pool,
    L2 normalisation (run on one text at a time)."""

    def __init__(self, path):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModel.from_pretrained(path).eval()

    def __call__(self, text: str, max_length: int = 8192) -> np.ndarray:
        torch = self.torch
        batch = self.tok([text], padding=True, truncation=True, max_length=max_length,
                         return_tensors="pt")
        with torch.no_grad():
            out = self.model(**batch).last_hidden_state[:, -1]
        return torch.nn.functional.normalize(out, p=2, dim=1)[0].numpy()


def query_text(task: str, query: str) -> str:
    """The card's ``get_detailed_instruct``."""
    return f"Instruct: {task}\nQuery:{query}"


class CardQwen3Reranker:
    """Qwen3-Reranker's model card: prefix + ``<Instruct>/<Query>/<Document>`` + suffix,
    softmax over the "no"/"yes" logits at the last position."""

    prefix = ("<|im_start|>system\nJudge whether the Document meets the requirements based on "
              "the Query and the Instruct provided. Note that the answer can only be \"yes\" "
              "or \"no\".<|im_end|>\n<|im_start|>user\n")
    suffix = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"

    def __init__(self, path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tok = AutoTokenizer.from_pretrained(path, padding_side="left")
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.yes = self.tok.convert_tokens_to_ids("yes")
        self.no = self.tok.convert_tokens_to_ids("no")

    def __call__(self, query, doc, instruction=None):
        torch = self.torch
        instruction = instruction or TASK
        text = f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {doc}"
        pre = self.tok.encode(self.prefix, add_special_tokens=False)
        suf = self.tok.encode(self.suffix, add_special_tokens=False)
        ids = pre + self.tok([text], padding=False, truncation="longest_first",
                             return_attention_mask=False,
                             max_length=8192 - len(pre) - len(suf))["input_ids"][0] + suf
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[:, -1, :]
        pair = torch.stack([logits[:, self.no], logits[:, self.yes]], dim=1)
        return float(torch.nn.functional.log_softmax(pair, dim=1)[:, 1].exp()[0])


class CardBgeGemma:
    """bge-reranker-v2-gemma's model card (``get_inputs``): ``<bos>A: query`` (3/4 of
    max_length), ``\\nB: passage`` (only the passage truncated), ``\\n`` + prompt; the
    score is the "Yes" logit at the last position. (The card calls
    ``tokenizer.prepare_for_model``, gone in transformers 5; its ``only_second``
    truncation is written out.)"""

    prompt = ("Given a query A and a passage B, determine whether the passage contains an "
              "answer to the query by providing a prediction of either 'Yes' or 'No'.")

    def __init__(self, path, max_length=1024):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch, self.max_length = torch, max_length
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.yes = self.tok("Yes", add_special_tokens=False)["input_ids"][0]

    def __call__(self, query, passage, prompt=None):
        torch, tok, n = self.torch, self.tok, self.max_length
        prompt_ids = tok(prompt or self.prompt, add_special_tokens=False)["input_ids"]
        sep = tok("\n", add_special_tokens=False)["input_ids"]
        q = tok(f"A: {query}", add_special_tokens=False, max_length=n * 3 // 4,
                truncation=True)["input_ids"]
        p = tok(f"B: {passage}", add_special_tokens=False, max_length=n,
                truncation=True)["input_ids"]
        first, second = [tok.bos_token_id] + q, sep + p
        second = second[:max(0, n - len(first))]
        ids = first + second + sep + prompt_ids
        with torch.no_grad():
            logits = self.model(input_ids=torch.tensor([ids])).logits[:, -1, self.yes]
        return float(logits[0])


# ---- fixtures -------------------------------------------------------------------------
def _register(endpoint, model_type, family):
    r = requests.post(f"{endpoint}/v1/model_registrations/{model_type}", timeout=30,
                      json={"model": json.dumps(family), "persist": False})
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("llm-rag")
    return {"emb": build_qwen3_embedding(root / "emb"),
            "qwen3": build_qwen3_reranker(root / "qwen3"),
            "gemma": build_gemma_reranker(root / "gemma")}


@pytest.fixture(scope="module")
def launched(endpoint, paths):
    """The three tiny models registered and launched; terminated afterwards."""
    client = RESTfulClient(endpoint)
    families = [
        ("embedding", dict(EMB_FAMILY, model_uri="file://" + paths["emb"])),
        ("rerank", {"model_name": "tiny-qwen3-reranker", "type": "LLM-based",
                    "llm_format": "qwen3", "max_tokens": 256,
                    "model_uri": "file://" + paths["qwen3"]}),
        ("rerank", {"model_name": "tiny-gemma-reranker", "type": "LLM-based",
                    "llm_format": "bge-llm", "max_tokens": 1024,
                    "model_uri": "file://" + paths["gemma"]}),
    ]
    uids = {}
    for model_type, fam in families:
        _register(endpoint, model_type, fam)
        uids[fam["model_name"]] = client.launch_model(
            model_name=fam["model_name"], model_type=model_type,
            model_uid=fam["model_name"], max_batch_size=16, batch_wait_ms=30)
    yield uids
    for (model_type, fam) in families:
        client.terminate_model(uids[fam["model_name"]])
        client.unregister_model(model_type, fam["model_name"])


@pytest.fixture(scope="module")
def card_emb(paths):
    return CardEmbedding(paths["emb"])


def _openai(endpoint):
    import openai

    return openai.Client(api_key="not empty", base_url=endpoint + "/v1")


# ---- embeddings ---------------------------------------------------------------------
def test_description_and_engine(endpoint, launched):
    desc = RESTfulClient(endpoint).describe_model("tiny-qwen3-embedding")
    assert desc["model_engine"] == "transformers" and desc["dimensions"] == 64
    engines = requests.get(f"{endpoint}/v1/engines/Qwen3-Embedding-0.6B", timeout=30).json()
    assert list(engines) == ["transformers", "vLLM"]
    engines = requests.get(f"{endpoint}/v1/engines/Qwen3-Reranker-0.6B", timeout=30).json()
    assert list(engines) == ["transformers", "vLLM"]


def test_documents_and_queries_match_the_model_card(endpoint, launched, card_emb):
    client = _openai(endpoint)
    docs = ["The capital of China is Beijing.", "Gravity is a force that attracts two bodies"]
    res = client.embeddings.create(model="tiny-qwen3-embedding", input=docs)  # base64
    got = np.array([d.embedding for d in res.data])
    np.testing.assert_allclose(got, np.stack([card_emb(t) for t in docs]), atol=TOL)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # tokens: the texts plus the <|endoftext|> the tokenizer appends
    assert res.usage.prompt_tokens == sum(len(card_emb.tok(t)["input_ids"]) for t in docs)

    queries = ["What is the capital of China?", "Explain gravity"]
    by_name = client.embeddings.create(model="tiny-qwen3-embedding", input=queries,
                                       encoding_format="float",
                                       extra_body={"prompt_name": "query"})
    expected = np.stack([card_emb(query_text(TASK, q)) for q in queries])
    np.testing.assert_allclose([d.embedding for d in by_name.data], expected, atol=TOL)
    by_instruction = client.embeddings.create(
        model="tiny-qwen3-embedding", input=queries,
        extra_body={"instruction": "Find code that answers the question"})
    expected = np.stack([card_emb(query_text("Find code that answers the question", q))
                         for q in queries])
    np.testing.assert_allclose([d.embedding for d in by_instruction.data], expected,
                               atol=TOL)
    # the query prefix changes the vector
    assert np.abs(np.array(by_name.data[0].embedding) - card_emb(queries[0])).max() > 1e-3


def test_matryoshka_dimensions(endpoint, launched, card_emb):
    client = _openai(endpoint)
    res = client.embeddings.create(model="tiny-qwen3-embedding", input="short vectors",
                                   dimensions=16)
    vec = np.array(res.data[0].embedding)
    full = card_emb("short vectors")[:16]
    assert vec.shape == (16,)
    np.testing.assert_allclose(vec, full / np.linalg.norm(full), atol=TOL)
    for bad in (65, 4):
        r = requests.post(f"{endpoint}/v1/embeddings", timeout=30, json={
            "model": "tiny-qwen3-embedding", "input": "x", "dimensions": bad})
        assert r.status_code == 400 and "8..64" in r.json()["detail"], r.text


def test_truncation_keeps_the_end_token(endpoint, launched, card_emb):
    long_text = "word " * 300  # max_tokens is 128
    out = requests.post(f"{endpoint}/v1/embeddings", timeout=60, json={
        "model": "tiny-qwen3-embedding", "input": [long_text, "short"]}).json()
    assert out["usage"]["truncated_inputs"] == [0]
    ids = card_emb.tok(long_text, truncation=True, max_length=128)["input_ids"]
    assert len(ids) == 128 and ids[-1] == card_emb.tok.convert_tokens_to_ids("<|endoftext|>")
    expected = card_emb(long_text, max_length=128)
    np.testing.assert_allclose(out["data"][0]["embedding"], expected, atol=TOL)


def test_concurrent_requests_batch_and_each_gets_its_own(endpoint, launched, card_emb):
    client = _openai(endpoint)
    jobs = [([f"document number {i}", f"another text {i} here"], None) for i in range(6)]
    jobs += [([f"query {i}?"], "query") for i in range(6)]

    def run(job):
        texts, name = job
        extra = {"prompt_name": name} if name else {}
        res = client.embeddings.create(model="tiny-qwen3-embedding", input=texts,
                                       extra_body=extra)
        return np.array([d.embedding for d in res.data])

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(run, jobs))
    for (texts, name), got in zip(jobs, results):
        pre = (lambda t: query_text(TASK, t)) if name else (lambda t: t)
        np.testing.assert_allclose(got, np.stack([card_emb(pre(t)) for t in texts]),
                                   atol=TOL)


def test_embedding_bad_input(endpoint, launched):
    for body, words in [({"input": ""}, "empty"),
                        ({"input": "x", "prompt_name": "passage"}, "prompt_name"),
                        ({"input": "x", "prompt_name": "query", "instruction": "y"},
                         "at most one"),
                        ({"input": [{"image": "data:image/png;base64,AAAA"}]}, "text only"),
                        ({"input": [[10 ** 7]]}, "vocabulary")]:
        r = requests.post(f"{endpoint}/v1/embeddings", timeout=30,
                          json=dict(body, model="tiny-qwen3-embedding"))
        assert r.status_code == 400 and words in r.json()["detail"], r.text


# ---- in-process batching ------------------------------------------------------------
def test_engine_batches_mixed_requests_exactly(paths, card_emb):
    """Concurrent requests of different lengths share forward passes (right padding) and
    each vector still equals the card's unpadded one."""
    from xinference.model.embedding.family import EmbeddingModelFamily
    from xinference.model.embedding.launch import plan_embedding_launch

    fam = EmbeddingModelFamily.model_validate(dict(EMB_FAMILY, model_uri=paths["emb"]))
    loader, _ = plan_embedding_launch(fam, "batch-test", max_batch_size=32,
                                      batch_wait_ms=50)
    engine = loader.load()
    texts = ["a", "a much longer sentence with many more words in it than the first",
             "medium length text", "x y z"]

    async def main():
        return await asyncio.gather(*(engine.create_embedding(t) for t in texts))

    outs = asyncio.run(main())
    assert engine.batch_stats()["max_items"] > 1
    for t, out in zip(texts, outs):
        np.testing.assert_allclose(out["data"][0]["embedding"], card_emb(t), atol=TOL)


# ---- rerank -------------------------------------------------------------------------
def test_qwen3_reranker_matches_the_model_card(endpoint, launched, paths):
    card = CardQwen3Reranker(paths["qwen3"])
    model = RESTfulClient(endpoint).get_model("tiny-qwen3-reranker")
    out = model.rerank(DOCS, QUERY, return_documents=True)
    expected = [card(QUERY, t) for t in TEXTS]
    got = {r["index"]: r["relevance_score"] for r in out["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(TEXTS))], expected, atol=TOL)
    scores = [r["relevance_score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
    assert out["results"][0]["document"]["text"] == TEXTS[out["results"][0]["index"]]
    assert out["meta"]["tokens"]["input_tokens"] > 0

    task = "Judge whether the passage is about geography"
    top = requests.post(f"{endpoint}/v1/rerank", timeout=60, json={
        "model": "tiny-qwen3-reranker", "query": QUERY, "documents": TEXTS, "top_n": 2,
        "instruction": task}).json()
    assert len(top["results"]) == 2
    for r in top["results"]:
        assert abs(r["relevance_score"] - card(QUERY, TEXTS[r["index"]], task)) < TOL


def test_bge_gemma_reranker_matches_the_model_card(endpoint, launched, paths):
    card = CardBgeGemma(paths["gemma"])
    out = RESTfulClient(endpoint).get_model("tiny-gemma-reranker").rerank(TEXTS, QUERY)
    got = {r["index"]: r["relevance_score"] for r in out["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(TEXTS))],
                               [card(QUERY, t) for t in TEXTS], atol=TOL)


def test_concurrent_rerank_requests(endpoint, launched, paths):
    card = CardQwen3Reranker(paths["qwen3"])
    model = RESTfulClient(endpoint).get_model("tiny-qwen3-reranker")
    queries = [f"question number {i} about {w}" for i, w in
               enumerate(["cats", "dogs", "bread", "paris", "stocks", "berlin"])]
    with ThreadPoolExecutor(6) as pool:
        outs = list(pool.map(lambda q: model.rerank(TEXTS[:3], q), queries))
    for q, out in zip(queries, outs):
        for r in out["results"]:
            assert abs(r["relevance_score"] - card(q, TEXTS[r["index"]])) < TOL


def test_rerank_chunks_long_documents(endpoint, launched):
    long_doc = "paris is the capital of france. " * 40
    out = requests.post(f"{endpoint}/v1/rerank", timeout=60, json={
        "model": "tiny-qwen3-reranker", "query": QUERY, "documents": [long_doc, "cats"],
        "max_chunks_per_doc": 3}).json()
    assert len(out["results"]) == 2
    # three windows of the long document plus one pair, every one within max_tokens
    assert 256 < out["meta"]["tokens"]["input_tokens"] <= 4 * 256


def test_rerank_bad_input(endpoint, launched):
    for body, code, words in [({"query": "", "documents": ["a"]}, 400, "query"),
                              ({"query": "q", "documents": []}, 400, "documents"),
                              ({"query": "q", "documents": ["a"], "instruction": 3}, 400,
                               "instruction")]:
        r = requests.post(f"{endpoint}/v1/rerank", timeout=30,
                          json=dict(body, model="tiny-qwen3-reranker"))
        assert r.status_code == code and words in r.json()["detail"], r.text
