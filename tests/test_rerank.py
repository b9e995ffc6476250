"""End-to-end tests of rerank models on the real session server.

No cross-encoder ships in a package, so the test builds a small one: a 2-layer
``BertForSequenceClassification`` (one label) with random weights spread wide enough
(``initializer_range=0.5``) that scores differ, and all-MiniLM's real WordPiece tokenizer.
It is saved with ``save_pretrained``, registered as a custom rerank model through
``POST /v1/model_registrations/rerank`` with ``model_uri`` and launched. The scores are
meaningless as relevance, so the tests check what the serving code owns: scores equal to
``sentence_transformers.CrossEncoder`` run in this process on the same files, ordering,
``top_n``, documents, token counts, chunking, and errors.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import requests

from xinference.client import RESTfulClient
from xinference.client.handles import RESTfulRerankModelHandle

from .conftest import minilm_dir

NAME = "tiny-cross-encoder"
UID = "tiny-rerank"
MAX_LEN = 64
QUERY = "where is the capital of france?"
DOCS = ["a cat sat on the mat", "dogs bark loudly at night", "the stock market fell today",
        "paris is the capital of france", "berlin is a city in germany",
        {"text": "bread is baked in an oven"}]
TEXTS = [d["text"] if isinstance(d, dict) else d for d in DOCS]


def build_cross_encoder(path) -> str:
    """Save a small random-weight cross-encoder (model + tokenizer) under ``path``."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tok = AutoTokenizer.from_pretrained(minilm_dir(),
                                        model_max_length=MAX_LEN)
    config = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64,
                        max_position_embeddings=MAX_LEN, num_labels=1, initializer_range=0.5)
    torch.manual_seed(1234)
    BertForSequenceClassification(config).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return str(path)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture(scope="module")
def ref(model_dir):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(model_dir, device="cpu")


@pytest.fixture(scope="module")
def rerank_uid(endpoint, model_dir):
    """The test cross-encoder registered (Xinference's documented custom rerank JSON) and
    launched as ``tiny-rerank``; terminated and unregistered afterwards."""
    family = {"model_name": NAME, "type": "normal", "language": ["en"],
              "model_id": "local/tiny-cross-encoder", "model_uri": "file://" + model_dir}
    r = requests.post(endpoint + "/v1/model_registrations/rerank", timeout=30,
                      json={"model": json.dumps(family), "persist": False})
    assert r.status_code == 200, r.text
    client = RESTfulClient(endpoint)
    uid = client.launch_model(model_name=NAME, model_type="rerank", model_uid=UID)
    yield uid
    client.terminate_model(uid)
    client.unregister_model("rerank", NAME)


def rerank(endpoint, **body):
    return requests.post(endpoint + "/v1/rerank", json=body, timeout=120)


def test_registration_is_listed(endpoint, rerank_uid):
    regs = requests.get(endpoint + "/v1/model_registrations/rerank", timeout=30).json()
    by_name = {r["model_name"]: r for r in regs}
    assert by_name[NAME]["is_builtin"] is False
    assert {"bge-reranker-base", "bge-reranker-large", "bge-reranker-v2-m3",
            "jina-reranker-v2"} <= {n for n, r in by_name.items() if r["is_builtin"]}
    d = requests.get(f"{endpoint}/v1/models/{rerank_uid}", timeout=30).json()
    assert d["model_type"] == "rerank" and d["model_name"] == NAME


def test_rerank_scores_and_order_match_in_process(endpoint, rerank_uid, ref):
    """The cURL-equivalent request: every document, sorted by score."""
    r = rerank(endpoint, model=rerank_uid, query=QUERY, documents=DOCS)
    assert r.status_code == 200, r.text
    out = r.json()
    assert isinstance(out["id"], str) and out["id"]
    expected = ref.predict([(QUERY, t) for t in TEXTS])
    assert len(set(np.round(expected, 6))) == len(TEXTS)  # distinct: ordering is decided
    results = out["results"]
    assert [x["index"] for x in results] == list(np.argsort(-expected, kind="stable"))
    for x in results:
        assert x["relevance_score"] == pytest.approx(float(expected[x["index"]]), abs=1e-5)
        assert x["document"] is None
    scores = [x["relevance_score"] for x in results]
    assert scores == sorted(scores, reverse=True)
    enc = ref.tokenizer([QUERY] * len(TEXTS), TEXTS, truncation=True, max_length=MAX_LEN)
    assert out["meta"]["tokens"] == {"input_tokens": sum(len(i) for i in enc["input_ids"]),
                                     "output_tokens": 0}


def test_client_handle_top_n_and_documents(endpoint, rerank_uid, ref):
    model = RESTfulClient(endpoint).get_model(rerank_uid)
    assert isinstance(model, RESTfulRerankModelHandle)
    expected = ref.predict([(QUERY, t) for t in TEXTS])
    best = list(np.argsort(-expected, kind="stable"))
    out = model.rerank(TEXTS, QUERY, top_n=2, return_documents=True)
    assert [x["index"] for x in out["results"]] == best[:2]
    assert [x["document"]["text"] for x in out["results"]] == [TEXTS[i] for i in best[:2]]
    everything = model.rerank(TEXTS, QUERY, top_n=100)
    assert [x["index"] for x in everything["results"]] == best


def test_long_documents_chunked(endpoint, rerank_uid, ref):
    """``max_chunks_per_doc``: a long document scores its best window next to the query."""
    long_doc = " ".join(f"sentence {i} mentions topic {i * 7} of the long report"
                        for i in range(40))
    docs = ["a short document", long_doc]
    plain = rerank(endpoint, model=rerank_uid, query=QUERY, documents=docs).json()
    chunked = rerank(endpoint, model=rerank_uid, query=QUERY, documents=docs,
                     max_chunks_per_doc=3).json()
    tok = ref.tokenizer
    budget = MAX_LEN - len(tok(QUERY, add_special_tokens=False)["input_ids"]) - 3
    offsets = tok(long_doc, add_special_tokens=False,
                  return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) > 3 * budget  # the document needs more than three windows
    windows = [long_doc[w[0][0]:w[-1][1]]
               for w in (offsets[s:s + budget] for s in range(0, 3 * budget, budget))]
    expected_long = max(ref.predict([(QUERY, w) for w in windows]))
    score = {x["index"]: x["relevance_score"] for x in chunked["results"]}
    assert score[1] == pytest.approx(float(expected_long), abs=1e-5)
    plain_score = {x["index"]: x["relevance_score"] for x in plain["results"]}
    assert score[0] == pytest.approx(plain_score[0], abs=1e-6)
    assert score[1] >= plain_score[1] - 1e-5  # the first window is the truncated document
    assert chunked["meta"]["tokens"]["input_tokens"] > plain["meta"]["tokens"]["input_tokens"]


@pytest.mark.parametrize("body, status, needle", [
    ({"top_n": 0}, 422, "top_n"),
    ({"top_n": -3}, 422, "top_n"),
    ({"documents": "not a list"}, 422, "documents"),
    ({"documents": [1, 2]}, 422, "documents"),
    ({"max_chunks_per_doc": 0}, 422, "max_chunks_per_doc"),
    ({"documents": []}, 400, "documents"),
    ({"query": ""}, 400, "query"),
    ({"query": None}, 422, "query"),
])
def test_bad_requests(endpoint, rerank_uid, body, status, needle):
    full = dict({"model": rerank_uid, "query": QUERY, "documents": TEXTS}, **body)
    r = requests.post(endpoint + "/v1/rerank", json=full, timeout=60)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_wrong_model_kind(endpoint, rerank_uid):
    r = rerank(endpoint, model="smollm2-instruct", query=QUERY, documents=TEXTS)
    assert r.status_code == 400 and "rerank" in r.json()["detail"]
    r = requests.post(endpoint + "/v1/embeddings", timeout=60,
                      json={"model": rerank_uid, "input": "hello"})
    assert r.status_code == 400
    r = rerank(endpoint, model="no-such-model", query=QUERY, documents=TEXTS)
    assert r.status_code == 404
    # The model still serves.
    assert rerank(endpoint, model=rerank_uid, query=QUERY, documents=TEXTS).status_code == 200


def test_layerwise_rerank_type_registers_but_does_not_launch(endpoint, model_dir):
    # ("LLM-based" launches on Transformers: tests/test_llm_embedding_rerank.py)
    client = RESTfulClient(endpoint)
    family = {"model_name": "llm-based-rerank", "type": "LLM-based layerwise",
              "model_uri": model_dir}
    client.register_model("rerank", family)
    try:
        r = requests.post(endpoint + "/v1/models", timeout=60,
                          json={"model_name": "llm-based-rerank", "model_type": "rerank"})
        assert r.status_code == 400 and "LLM-based layerwise" in r.json()["detail"]
    finally:
        client.unregister_model("rerank", "llm-based-rerank")
    r = requests.post(endpoint + "/v1/model_registrations/rerank", timeout=30,
                      json={"model": json.dumps({"model_name": "bad", "type": "weird",
                                                 "model_uri": model_dir})})
    assert r.status_code == 400 and "type" in r.json()["detail"]
