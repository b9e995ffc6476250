"""The llama.cpp engine on xllamacpp: requests run together in llama.cpp's slots
(continuous batching), with the same results as alone, and a client that goes away frees
its slot.

Runs on the session server's bundled SmolLM2 (``n_parallel`` 8 by default). The engine's
counters (busy slots from llama-server, cancelled requests) are read from the model's
ModelActor over xoscar, as the REST API itself talks to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.client
import json
import threading
import time
from urllib.parse import urlsplit

import pytest
import requests
import xoscar as xo

from .conftest import SMOLLM, run_with_cluster_key

pytestmark = pytest.mark.e2e

PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):",
           "Water boils at", "My favourite fruit is", "In 1969, astronauts",
           "The best way to learn", "Dear diary, today"]


def _replica(endpoint: str, model_uid: str) -> dict:
    return requests.get(f"{endpoint}/v1/models/{model_uid}", timeout=10).json()["replicas"][0]


def engine_stats(endpoint: str, model_uid: str = SMOLLM) -> dict:
    """The engine counters of the model's first replica (``ModelActor.engine_stats``)."""
    rep = _replica(endpoint, model_uid)

    async def ask():
        ref = await xo.actor_ref(address=rep["model_address"], uid=rep["replica_uid"])
        return await ref.engine_stats()

    return run_with_cluster_key(endpoint, ask)


def poll_stats(endpoint: str, pred, timeout: float, model_uid: str = SMOLLM):
    """Poll the engine counters (one connection, every 10 ms) until ``pred(stats)``;
    returns ``(stats, seconds waited)``.

    Raises:
        AssertionError: ``timeout`` seconds passed first.
    """
    rep = _replica(endpoint, model_uid)

    async def poll():
        ref = await xo.actor_ref(address=rep["model_address"], uid=rep["replica_uid"])
        t0 = time.monotonic()
        while True:
            stats = await ref.engine_stats()
            if pred(stats):
                return stats, time.monotonic() - t0
            assert time.monotonic() - t0 < timeout, f"timed out: {stats}"
            await asyncio.sleep(0.01)

    return run_with_cluster_key(endpoint, poll)


def _stream(endpoint: str, prompt: str, max_tokens: int, marks: dict, key: int):
    """Stream a completion; record when the first token and the end arrived."""
    r = requests.post(f"{endpoint}/v1/completions", stream=True, timeout=300, json={
        "model": SMOLLM, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
        "ignore_eos": True, "stream": True})
    assert r.status_code == 200, r.text
    text = []
    for line in r.iter_lines():
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        piece = chunk["choices"][0]["text"]
        if piece and key not in marks["first"]:
            marks["first"][key] = time.monotonic()
        text.append(piece)
    marks["end"][key] = time.monotonic()
    return "".join(text)


def test_eight_streams_overlap(endpoint):
    """8 concurrent streams run together: the last request's first token arrives before
    the first request has finished (one at a time, it would wait for all seven)."""
    marks = {"first": {}, "end": {}}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = []
        for i, p in enumerate(PROMPTS):
            futures.append(pool.submit(_stream, endpoint, p, 48, marks, i))
            time.sleep(0.02)  # submitted in order: request 0 first, request 7 last
        texts = [f.result() for f in futures]
    assert all(texts)
    assert marks["first"][7] < marks["end"][0], marks


def assert_greedy_matches(alone, together, tie: float = 0.3):
    """Greedy outputs of requests decoded together against the same requests alone.

    llama.cpp's CPU kernels are not bitwise batch-invariant (a batch of 4 sums in other
    orders than a batch of 1), so where the two best candidates of a step are within
    rounding noise of each other, greedy may pick either (measured in the full suite:
    the same token's log-probability differs by 0.01 nats at the first step and a 0.19-nat
    lead flipped a few steps later; SmolLM2 Q4_1). The check is therefore, with no penalty
    (so greedy takes the argmax of the reported raw distribution): both runs give the same
    tokens up to their first difference, the log-probabilities agree within ``tie`` nats
    until then (a request that saw another's tokens is off by nats, and says other words
    from its first token), a difference only happens where the two best candidates are
    within ``tie`` nats, and all but one of the outputs are identical.

    Each run is ``{"tokens": [...], "token_logprobs": [...], "top_logprobs": [{token:
    logprob}, ...]}`` (``/v1/completions``' ``logprobs``; :func:`chat_logprobs` turns a
    chat answer into it). Returns the number of identical outputs."""
    identical = 0
    for a, t in zip(alone, together):
        n = next((i for i, (x, y) in enumerate(zip(a["tokens"], t["tokens"])) if x != y),
                 None)
        same = len(a["tokens"]) if n is None else n
        for i in range(same):
            assert abs(a["token_logprobs"][i] - t["token_logprobs"][i]) < tie, (i, a, t)
        if n is None:
            identical += 1
            continue
        top2 = sorted(a["top_logprobs"][n].values(), reverse=True)[:2]
        assert len(top2) == 2 and top2[0] - top2[1] < tie, (n, a["top_logprobs"][n])
    assert identical >= len(alone) - 1  # a near-tie in more than one is not noise
    return identical


def chat_logprobs(choice) -> dict:
    """An OpenAI SDK chat choice's ``logprobs`` in the shape of ``/v1/completions``'."""
    content = choice.logprobs.content
    return {"tokens": [c.token for c in content],
            "token_logprobs": [c.logprob for c in content],
            "top_logprobs": [{t.token: t.logprob for t in c.top_logprobs} for c in content]}


def test_batched_greedy_equals_alone(endpoint):
    """Greedy outputs of requests decoded together equal the same requests run alone
    (:func:`assert_greedy_matches`)."""
    def complete(prompt):
        r = requests.post(f"{endpoint}/v1/completions", timeout=300, json={
            "model": SMOLLM, "prompt": prompt, "max_tokens": 24, "temperature": 0,
            "ignore_eos": True, "logprobs": 2, "repeat_penalty": 1.0})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["logprobs"]

    prompts = PROMPTS[:4]
    alone = [complete(p) for p in prompts]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(complete, prompts))
    assert_greedy_matches(alone, together)


def test_ignore_eos_gives_exactly_max_tokens(endpoint):
    r = requests.post(f"{endpoint}/v1/chat/completions", timeout=120, json={
        "model": SMOLLM, "messages": [{"role": "user", "content": "Say hi."}],
        "max_tokens": 40, "temperature": 0, "ignore_eos": True}).json()
    assert r["usage"]["completion_tokens"] == 40
    assert r["choices"][0]["finish_reason"] == "length"
    bad = requests.post(f"{endpoint}/v1/completions", timeout=30, json={
        "model": SMOLLM, "prompt": "x", "ignore_eos": "yes"})
    assert bad.status_code == 400 and "ignore_eos" in bad.json()["detail"]


def test_disconnect_mid_stream_frees_its_slot(endpoint):
    """A client that goes away mid-stream frees its llama.cpp slot within a second, and
    the engine counts the request as cancelled; a control stream left alone keeps its
    slot until it ends."""
    url = urlsplit(endpoint)
    before = engine_stats(endpoint)["requests_cancelled"]
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", "/v1/completions", body=json.dumps({
        "model": SMOLLM, "prompt": "Tell me a very long story.", "max_tokens": 4000,
        "temperature": 0, "ignore_eos": True, "stream": True}),
        headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.readline()  # a first event: the request holds a slot and is generating
    busy = engine_stats(endpoint)
    assert busy["slots_busy"] >= 1 and busy["requests_running"] >= 1, busy
    time.sleep(0.5)
    assert engine_stats(endpoint)["slots_busy"] >= 1  # control: still generating
    conn.sock.shutdown(2)  # the client goes away
    conn.close()
    stats, waited = poll_stats(endpoint, lambda s: s["slots_busy"] == 0, timeout=10)
    assert waited < 1.0, waited
    assert stats["requests_running"] == 0
    assert stats["requests_cancelled"] == before + 1


@pytest.mark.parametrize("value", [0, -2, "abc", 1.5])
def test_bad_n_parallel_is_400_naming_it(endpoint, value):
    r = requests.post(f"{endpoint}/v1/models", timeout=60, json={
        "model_name": SMOLLM, "model_engine": "llama.cpp", "model_uid": "np-bad",
        "n_parallel": value})
    assert r.status_code == 400 and "n_parallel" in r.json()["detail"], r.text
    assert requests.get(f"{endpoint}/v1/models/np-bad", timeout=10).status_code == 404


def test_n_parallel_and_n_ctx_launch_options(endpoint):
    """``n_parallel`` sets the slots; ``n_ctx`` the shared context: a request may use it
    all (prompt + completion), and describe reports it."""
    uid = "np-two"
    r = requests.post(f"{endpoint}/v1/models", timeout=120, json={
        "model_name": SMOLLM, "model_engine": "llama.cpp", "model_uid": uid,
        "n_parallel": 2, "n_ctx": 256})
    assert r.status_code == 200, r.text
    try:
        assert engine_stats(endpoint, uid)["n_parallel"] == 2
        assert requests.get(f"{endpoint}/v1/models/{uid}",
                            timeout=10).json()["context_length"] == 256
        long = requests.post(f"{endpoint}/v1/completions", timeout=60, json={
            "model": uid, "prompt": "word " * 300, "max_tokens": 4})
        assert long.status_code == 400 and "256" in long.json()["detail"]
        ok = requests.post(f"{endpoint}/v1/completions", timeout=300, json={
            "model": uid, "prompt": "word " * 200, "max_tokens": 1000, "temperature": 0,
            "ignore_eos": True}).json()
        # the budget is what the shared 256-token context leaves after the prompt
        # (llama.cpp stops a few tokens short of a full context)
        assert 256 - 8 <= ok["usage"]["total_tokens"] <= 256
        assert ok["choices"][0]["finish_reason"] == "length"
    finally:
        requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)


def test_request_limits_429_when_slots_and_queue_are_full(endpoint):
    """``request_limits`` bounds running + waiting requests: with both streams in flight
    on a 1-slot model, a third request is refused with 429 at once, never queued."""
    uid = "np-one"
    r = requests.post(f"{endpoint}/v1/models", timeout=120, json={
        "model_name": SMOLLM, "model_engine": "llama.cpp", "model_uid": uid,
        "n_parallel": 1, "request_limits": 2})
    assert r.status_code == 200, r.text
    stop = threading.Event()
    try:
        streams = [requests.post(f"{endpoint}/v1/completions", stream=True, timeout=300,
                                 json={"model": uid, "prompt": "Count:", "stream": True,
                                       "max_tokens": 2000, "ignore_eos": True})
                   for _ in range(2)]
        assert all(s.status_code == 200 for s in streams)
        t0 = time.monotonic()
        third = requests.post(f"{endpoint}/v1/completions", timeout=30, json={
            "model": uid, "prompt": "hi", "max_tokens": 2})
        assert third.status_code == 429, third.text
        assert time.monotonic() - t0 < 5
        for s in streams:
            s.close()
    finally:
        stop.set()
        requests.delete(f"{endpoint}/v1/models/{uid}", timeout=60)
