"""The two paths of a streamed answer through a real server, on the bundled SmolLM2
(llama.cpp): the stream channel with chunks pushed from the engine's request threads (the
default, the shared ``server`` fixture) and RPC pulls only (a server started with
``XINFERENCE_STREAM_CHANNEL=0``). Both must send the same events: greedy text equal to
the non-stream answer, ``n`` choices from concurrent threads, usage, concurrent streams,
and a client that leaves mid-stream frees its slot."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time
from urllib.parse import urlsplit

import pytest
import requests

from .conftest import SMOLLM, Server
from .test_llama_cpp import engine_stats, poll_stats

MSG = [{"role": "user", "content": "Name three colors and say why you like them."}]


@pytest.fixture(scope="module")
def rpc_endpoint(tmp_path_factory):
    """A server whose streams are pulled by RPC only (no stream channel)."""
    srv = Server(tmp_path_factory.mktemp("xinference-rpc"),
                 env={"XINFERENCE_STREAM_CHANNEL": "0"})
    try:
        r = requests.post(srv.endpoint + "/v1/models", timeout=120,
                          json={"model_name": SMOLLM, "model_engine": "llama.cpp"})
        assert r.status_code == 200, r.text
        yield srv.endpoint
    finally:
        srv.stop()


@pytest.fixture(params=["channel", "rpc"])
def any_endpoint(request, endpoint, rpc_endpoint):
    return endpoint if request.param == "channel" else rpc_endpoint


def _stream(endpoint: str, body: dict) -> list:
    """The JSON chunks of a streamed chat (the ``[DONE]`` end checked)."""
    r = requests.post(endpoint + "/v1/chat/completions", json=dict(body, stream=True),
                      stream=True, timeout=120)
    assert r.status_code == 200, r.text
    events = [line[6:] for line in r.iter_lines(decode_unicode=True)
              if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def _texts(chunks: list, n: int) -> list:
    out = [""] * n
    for c in chunks:
        for ch in c["choices"]:
            out[ch["index"]] += ch["delta"].get("content") or ""
    return out


def test_both_paths_stream_the_non_stream_answer(any_endpoint):
    """Greedy: the streamed text equals the non-stream answer, the usage chunk comes
    last and matches."""
    body = {"model": SMOLLM, "messages": MSG, "max_tokens": 40, "temperature": 0,
            "stream_options": {"include_usage": True}}
    whole = requests.post(any_endpoint + "/v1/chat/completions", json=body,
                          timeout=120).json()
    chunks = _stream(any_endpoint, body)
    assert _texts(chunks, 1) == [whole["choices"][0]["message"]["content"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


def test_two_choices_from_two_threads_stay_apart(any_endpoint):
    """``n`` = 2: llama.cpp runs each choice in its own request thread, both pushing into
    one stream. Each choice gets all its tokens (``ignore_eos``) and its text is exactly
    its tokens' (logprobs name every token), one finish each; usage counts both."""
    body = {"model": SMOLLM, "messages": MSG, "max_tokens": 30, "temperature": 0.8,
            "n": 2, "ignore_eos": True, "logprobs": True,
            "stream_options": {"include_usage": True}}
    chunks = _stream(any_endpoint, body)
    tokens = [[], []]
    for c in chunks:
        for ch in c["choices"]:
            tokens[ch["index"]] += [e["token"] for e in
                                    (ch.get("logprobs") or {}).get("content") or []]
    texts = _texts(chunks, 2)
    assert [len(t) for t in tokens] == [30, 30]
    assert ["".join(t) for t in tokens] == texts
    finals = [ch for c in chunks for ch in c["choices"] if ch["finish_reason"]]
    assert sorted(ch["index"] for ch in finals) == [0, 1]
    assert chunks[-1]["usage"]["completion_tokens"] == 60


def test_both_paths_give_the_same_events(endpoint, rpc_endpoint):
    """The same greedy request through the channel and through RPC pulls: the same chunks
    apart from the id and the creation time."""
    body = {"model": SMOLLM, "messages": MSG, "max_tokens": 24, "temperature": 0,
            "stream_options": {"include_usage": True}}

    def shape(chunks):
        return [{k: v for k, v in c.items() if k not in ("id", "created")} for c in chunks]

    assert shape(_stream(endpoint, body)) == shape(_stream(rpc_endpoint, body))


def test_concurrent_streams_all_complete(any_endpoint):
    """Eight fixed-length streams at once (the engine's eight slots): each gets every
    token, in its own stream."""
    body = {"model": SMOLLM, "max_tokens": 32, "temperature": 0, "ignore_eos": True,
            "stream_options": {"include_usage": True}}

    def one(i):
        chunks = _stream(any_endpoint, dict(body, messages=[
            {"role": "user", "content": f"Count from {i} upwards."}]))
        assert len({c["id"] for c in chunks}) == 1
        return chunks[-1]["usage"]["completion_tokens"], sum(
            1 for c in chunks for ch in c["choices"] if ch["delta"].get("content"))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(one, range(8)))
    assert all(tokens == 32 and 0 < pieces <= 32 for tokens, pieces in rows), rows


def test_a_client_leaving_mid_stream_frees_its_slot_on_rpc_pulls(rpc_endpoint):
    """Without a channel too, a client that goes away mid-stream has its request
    cancelled and its slot freed."""
    url = urlsplit(rpc_endpoint)
    before = engine_stats(rpc_endpoint)["requests_cancelled"]
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    conn.request("POST", "/v1/chat/completions", body=json.dumps({
        "model": SMOLLM, "messages": MSG, "max_tokens": 4000, "temperature": 0,
        "ignore_eos": True, "stream": True}), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.readline()
    time.sleep(0.3)
    assert engine_stats(rpc_endpoint)["slots_busy"] >= 1
    conn.sock.shutdown(2)
    conn.close()
    stats, _ = poll_stats(rpc_endpoint, lambda s: s["slots_busy"] == 0, timeout=10)
    assert stats["requests_cancelled"] == before + 1
