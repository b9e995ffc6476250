"""Abort by ``request_id`` and the Prometheus ``/metrics``, against a real server running
the bundled SmolLM2 (exported to ``pytorch``) on the Transformers engine, and the bundled
GGUF on the llama.cpp engine where that engine can run here.

Abort lives in the ModelActor (request id -> the running call or stream), so any engine
that stops on cancellation honours it; the Transformers engine drops the request's row from
its batch. ``/metrics`` is parsed with prometheus-client's own parser and its counters are
compared before and after known requests.
"""

from __future__ import annotations

import json
import threading

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from .conftest import SMOLLM, start_server, wait_until
from .test_transformers import TF_MODEL, _register, smollm2_pytorch_dir  # noqa: F401

pytestmark = pytest.mark.e2e

LONG = [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]


@pytest.fixture(scope="module")
def tf(tmp_path_factory, smollm2_pytorch_dir):  # noqa: F811
    srv = start_server(tmp_path_factory.mktemp("abort-home"))
    try:
        _register(srv.endpoint, TF_MODEL, smollm2_pytorch_dir)
        r = requests.post(f"{srv.endpoint}/v1/models", timeout=300, json={
            "model_name": TF_MODEL, "model_engine": "Transformers", "max_num_seqs": 4})
        assert r.status_code == 200, r.text
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module", params=["Transformers", "llama.cpp"])
def model(request, tf):
    """The uid of a model on each engine (llama.cpp: skipped where it cannot run here)."""
    if request.param == "Transformers":
        return TF_MODEL
    engines = requests.get(f"{tf.endpoint}/v1/engines/{SMOLLM}", timeout=30).json()
    if not any(r.get("available") for r in engines.get("llama.cpp", [])):
        pytest.skip("the llama.cpp engine cannot run here")
    r = requests.get(f"{tf.endpoint}/v1/models/{SMOLLM}", timeout=30)
    if r.status_code == 404:
        r = requests.post(f"{tf.endpoint}/v1/models", timeout=300, json={
            "model_name": SMOLLM, "model_engine": "llama.cpp"})
        assert r.status_code == 200, r.text
    return SMOLLM


def _chat(endpoint, model=TF_MODEL, **body):
    return requests.post(f"{endpoint}/v1/chat/completions", timeout=300,
                         json={"model": model, "messages": LONG, **body}, **(
                             {"stream": True} if body.get("stream") else {}))


def _abort(endpoint, rid, uid=TF_MODEL):
    return requests.post(f"{endpoint}/v1/models/{uid}/requests/{rid}/abort", timeout=30)


def _describe_admitted(endpoint, model=TF_MODEL) -> int:
    text = requests.get(f"{endpoint}/metrics", timeout=30).text
    return int(_value(text, "xinference_model_admitted_requests", model_uid=model))


def _events(resp):
    for line in resp.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = line[6:]
            yield None if data == "[DONE]" else json.loads(data)


def test_abort_a_stream(tf, model):
    resp = _chat(tf.endpoint, model, stream=True, max_tokens=2000, request_id="stream-1")
    assert resp.status_code == 200
    events = _events(resp)
    first_text = None
    for ev in events:
        delta = ev["choices"][0]["delta"] if ev and ev["choices"] else {}
        if delta.get("content"):
            first_text = ev
            break
    assert first_text is not None
    # The same id may not run twice at once.
    dup = _chat(tf.endpoint, model, max_tokens=2, request_id="stream-1")
    assert dup.status_code == 409, dup.text
    r = _abort(tf.endpoint, "stream-1", model)
    assert r.status_code == 200, r.text
    assert r.json() == {"request_id": "stream-1", "model_uid": model, "aborted": True}
    rest = list(events)
    assert rest[-1] is None  # [DONE]
    final = rest[-2]
    assert final["choices"][0]["finish_reason"] == "abort"
    assert final["id"] == first_text["id"] and final["object"] == "chat.completion.chunk"
    assert all(e["choices"][0]["finish_reason"] is None for e in rest[:-2])
    generated = sum(1 for e in rest[:-2] if e["choices"][0]["delta"].get("content"))
    assert generated < 1900
    # The engine dropped the request: nothing is admitted any more; the id is free again.
    wait_until(lambda: _describe_admitted(tf.endpoint, model) == 0, 30,
               "the row to be dropped")
    assert _abort(tf.endpoint, "stream-1", model).status_code == 404


def test_abort_a_non_stream_request(tf, model):
    out = {}

    def run():
        out["resp"] = _chat(tf.endpoint, model, max_tokens=2000, request_id="whole-1")

    t = threading.Thread(target=run)
    t.start()
    # 404 until the request has reached the model, then 200.
    aborted = wait_until(lambda: _abort(tf.endpoint, "whole-1", model).status_code == 200
                         or not t.is_alive(), 60, "the request to start")
    t.join(60)
    assert aborted and not t.is_alive()
    resp = out["resp"]
    assert resp.status_code == 499, resp.text
    body = resp.json()
    assert body["error"]["type"] == "request_aborted" and "whole-1" in body["detail"]
    wait_until(lambda: _describe_admitted(tf.endpoint, model) == 0, 30,
               "the row to be dropped")


def test_abort_unknown(tf):
    r = _abort(tf.endpoint, "never-sent")
    assert r.status_code == 404 and "never-sent" in r.json()["detail"]
    assert _abort(tf.endpoint, "x", uid="no-such-model").status_code == 404
    # A bad request_id is refused before anything runs.
    r = _chat(tf.endpoint, max_tokens=2, request_id="")
    assert r.status_code == 422


def _value(text: str, name: str, **labels) -> float:
    """The sample ``name`` with ``labels`` (0 when absent), parsed by prometheus-client."""
    total = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_metrics_count_known_requests(tf):
    e = tf.endpoint
    before = requests.get(f"{e}/metrics", timeout=30)
    assert before.status_code == 200
    assert before.headers["content-type"].startswith("text/plain")
    b = before.text
    completion = prompt = 0
    for _ in range(2):
        r = _chat(e, max_tokens=5)
        assert r.status_code == 200
        completion += r.json()["usage"]["completion_tokens"]
        prompt += r.json()["usage"]["prompt_tokens"]
    # A stream that asks for usage, and one that does not (it must not get a usage chunk).
    chunks = [c for c in _events(_chat(e, stream=True, max_tokens=5,
                                       stream_options={"include_usage": True})) if c]
    usage = chunks[-1]["usage"]
    completion += usage["completion_tokens"]
    prompt += usage["prompt_tokens"]
    plain = [c for c in _events(_chat(e, stream=True, max_tokens=5)) if c]
    assert all("usage" not in c for c in plain) and plain[-1]["choices"]
    plain_tokens = sum(1 for c in plain if c["choices"][0]["delta"].get("content"))
    bad = _chat(e, max_tokens=5, temperature=-1)  # refused by the engine
    assert bad.status_code == 400
    a = requests.get(f"{e}/metrics", timeout=30).text

    def rise(name, **labels):
        return _value(a, name, **labels) - _value(b, name, **labels)

    m = {"model_uid": TF_MODEL, "model_name": TF_MODEL, "engine": "Transformers"}
    assert rise("xinference_model_requests_total", **m) == 5
    assert rise("xinference_model_request_errors_total", **m) == 1
    # Every request has the same messages, so the same prompt length.
    assert rise("xinference_model_prompt_tokens_total", **m) == prompt * 4 // 3
    generated = rise("xinference_model_generated_tokens_total", **m)
    assert completion + 1 <= generated <= completion + 5 and plain_tokens <= 5
    assert rise("xinference_model_request_duration_seconds_count", **m) == 5
    assert rise("xinference_model_time_to_first_token_seconds_count", **m) == 2
    assert rise("xinference_http_requests_total", method="POST",
                route="/v1/chat/completions", status="200") == 4
    assert rise("xinference_http_requests_total", method="POST",
                route="/v1/chat/completions", status="400") == 1
    running = len(requests.get(f"{e}/v1/models", timeout=30).json()["data"])
    assert _value(a, "xinference_running_models") == running >= 1
    assert _value(a, "xinference_model_replicas", model_uid=TF_MODEL, status="ready") == 1
    assert _value(a, "xinference_node_memory_total_bytes") > 0
    assert _value(a, "xinference_node_model_processes") == running
    assert _value(a, "xinference_model_generation_tokens_per_second", **m) > 0
