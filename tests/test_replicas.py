"""Model events and replicas at run time, end to end on a real server with the bundled
SmolLM2 on llama.cpp: the event log of a launch, of a failed launch and of a terminate;
scale out and in under 8 concurrent streams losing no request (new replicas serve at
once, removed ones drain first); the 400s and 404s; ``xinference events``."""

from __future__ import annotations

import asyncio
import os
import json
import subprocess
import sys
import threading
import time

import pytest
import requests
import xoscar as xo

from xinference.client import RESTfulClient, RESTfulClientError

from .conftest import SMOLLM, start_server

pytestmark = pytest.mark.e2e

UID = "scale-llm"
MSG = [{"role": "user", "content": "Tell me a short story about a cat."}]


@pytest.fixture(scope="module")
def ep(tmp_path_factory):
    srv = start_server(tmp_path_factory.mktemp("replicas-home"))
    try:
        r = requests.post(srv.endpoint + "/v1/models", timeout=300, json={
            "model_name": SMOLLM, "model_engine": "llama.cpp", "model_uid": UID,
            "n_parallel": 8, "n_threads": 1})  # two replicas on 2 shared cores: no spinning
        assert r.status_code == 200, r.text
        yield srv.endpoint
    finally:
        srv.stop()


def _events(ep, uid):
    r = requests.get(f"{ep}/v1/models/{uid}/events", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _stream(ep, out, i, max_tokens=16):
    """One streamed chat; records its text, finish reason, or the error."""
    try:
        with requests.post(ep + "/v1/chat/completions", stream=True, timeout=300, json={
                "model": UID, "messages": MSG, "max_tokens": max_tokens, "stream": True,
                "temperature": 0.8, "seed": i}) as r:
            if r.status_code != 200:
                out[i] = ("http", r.status_code, r.text)
                return
            finish, text = None, ""
            for line in r.iter_lines(decode_unicode=True):
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                if "error" in chunk:
                    out[i] = ("error", chunk)
                    return
                for c in chunk["choices"]:
                    text += c["delta"].get("content") or ""
                    finish = c.get("finish_reason") or finish
            out[i] = ("ok", finish, text)
    except Exception as e:  # a lost connection is a lost request
        out[i] = ("exception", repr(e))


def _wave(ep, n=8, max_tokens=16):
    out = {}
    threads = [threading.Thread(target=_stream, args=(ep, out, i, max_tokens))
               for i in range(n)]
    for t in threads:
        t.start()
    return out, threads


def _served(ep):
    """``{replica_id: requests served}`` read from each replica's ModelActor."""
    rows = requests.get(f"{ep}/v1/models/{UID}/replicas", timeout=30).json()

    async def read():
        out = {}
        for r in rows:
            ref = await xo.actor_ref(r["model_address"], r["replica_id"])
            out[r["replica_id"]] = (await ref.get_metrics())["stats"]["requests"]
        return out

    # the actors answer only frames signed with the cluster's key, as the REST API's are
    key = requests.get(f"{ep}/v1/cluster/key", timeout=30).json()["key"]
    old = os.environ.get("XOSCAR_AUTH_KEY")
    os.environ["XOSCAR_AUTH_KEY"] = key
    try:
        return asyncio.run_coroutine_threadsafe(read(), _xoscar_loop()).result(60)
    finally:
        if old is None:
            os.environ.pop("XOSCAR_AUTH_KEY", None)
        else:
            os.environ["XOSCAR_AUTH_KEY"] = old


_LOOP = []


def _xoscar_loop():
    """One event loop for the test's own xoscar calls (xoscar keeps its connections per
    loop, so a second ``asyncio.run`` would reuse ones bound to a closed loop)."""
    if not _LOOP:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        _LOOP.append(loop)
    return _LOOP[0]


def test_launch_events(ep):
    ev = _events(ep, UID)
    text = [e["event_content"] for e in ev]
    assert text[0].startswith("Launch of LLM model 'smollm2-instruct' requested")
    assert any("placed on worker" in t for t in text)
    assert any(t.startswith(f"Replica {UID}-0 loaded (pid ") for t in text)
    assert text[-1] == "Model is running"
    assert all(e["event_type"] == "INFO" for e in ev)
    assert [e["event_ts"] for e in ev] == sorted(e["event_ts"] for e in ev)
    r = requests.get(f"{ep}/v1/models/never-launched/events", timeout=30)
    assert r.status_code == 404


@pytest.mark.timeout(1500)
def test_scale_out_and_in_under_load_loses_no_request(ep):
    client = RESTfulClient(ep)
    assert [r["replica_id"] for r in client.list_model_replicas(UID)] == [f"{UID}-0"]
    first, t1 = _wave(ep, max_tokens=32)
    time.sleep(1.0)  # the streams are running
    out = client.scale_out(UID, 1)
    assert [r["replica_id"] for r in out["replicas"]] == [f"{UID}-0", f"{UID}-1"]
    assert all(r["status"] == "ready" for r in out["replicas"])
    before = _served(ep)
    second, t2 = _wave(ep)  # reaches both replicas at once
    for t in t1 + t2:
        t.join(600)
        assert not t.is_alive()
    after = _served(ep)
    assert after[f"{UID}-1"] - before.get(f"{UID}-1", 0) >= 3, (before, after)
    # Scale in while 8 streams run: the removed replica drains them first.
    third, t3 = _wave(ep, max_tokens=32)
    time.sleep(1.0)
    removed = {}
    scaler = threading.Thread(target=lambda: removed.update(client.scale_in(UID, 1)))
    scaler.start()
    time.sleep(0.5)
    fourth, t4 = _wave(ep)  # sent during the drain: only the remaining replica serves
    scaler.join(600)
    for t in t3 + t4:
        t.join(600)
        assert not t.is_alive()
    assert removed["removed"] == [f"{UID}-1"]
    assert [r["replica_id"] for r in removed["replicas"]] == [f"{UID}-0"]
    for wave in (first, second, third, fourth):
        assert len(wave) == 8
        for i, res in wave.items():
            assert res[0] == "ok" and res[1] in ("stop", "length") and res[2], (i, res)
    ev = [e["event_content"] for e in _events(ep, UID)]
    for needle in ("Scale out by 1 requested", f"Replica {UID}-1 added",
                   f"Replica {UID}-1 removed from service; draining its requests",
                   f"Replica {UID}-1 stopped"):
        assert needle in ev, (needle, ev)
    # The stopped replica's process is gone from its worker.
    assert [r["replica_id"] for r in client.list_model_replicas(UID)] == [f"{UID}-0"]


def test_bad_scaling_requests(ep):
    def post(path, body):
        return requests.post(f"{ep}/v1/models/{UID}/replicas/{path}", json=body, timeout=60)

    r = post("scale_in", {"cnt": 1})  # would leave none
    assert r.status_code == 400 and "at least 1" in r.json()["detail"]
    for body in ({"cnt": 0}, {"cnt": -2}, {"cnt": "two"}, {}):
        for path in ("scale_out", "scale_in"):
            r = post(path, body)
            assert r.status_code == 400 and "cnt" in r.json()["detail"], (path, body, r.text)
    r = post("scale_out", {"cnt": 100000})  # far beyond the worker's memory
    assert r.status_code == 400 and "MiB" in r.json()["detail"], r.text
    r = requests.delete(f"{ep}/v1/models/{UID}/replicas/{UID}-77", timeout=30)
    assert r.status_code == 404 and f"{UID}-0" in r.json()["detail"]
    r = post("scale_out", {"cnt": 1}).status_code
    assert r == 200
    r = requests.delete(f"{ep}/v1/models/{UID}/replicas/{UID}-0", timeout=120)
    assert r.status_code == 200 and r.json()["removed"] == [f"{UID}-0"]
    assert [x["replica_id"] for x in r.json()["replicas"]] == [f"{UID}-1"]
    r = requests.get(f"{ep}/v1/models/ghost/replicas", timeout=30)
    assert r.status_code == 404
    out = requests.post(ep + "/v1/chat/completions", timeout=120, json={
        "model": UID, "messages": MSG, "max_tokens": 4}).json()
    assert out["choices"][0]["finish_reason"] in ("stop", "length")


def test_failed_launch_and_terminate_leave_events(ep, tmp_path):
    r = requests.post(ep + "/v1/models", timeout=120, json={
        "model_name": SMOLLM, "model_engine": "llama.cpp", "model_uid": "broken-llm",
        "model_path": str(tmp_path / "no-such.gguf")})
    assert r.status_code >= 400
    ev = _events(ep, "broken-llm")
    assert ev[-1]["event_type"] == "ERROR" and ev[-1]["kind"] == "error"
    assert ev[-1]["event_content"].startswith("Launch failed: ")
    assert r.json()["detail"] in ev[-1]["event_content"]
    # The CLI shows them.
    p = subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline", "events",
                        "-e", ep, "-u", "broken-llm"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 0 and "Launch failed" in p.stdout and "ERROR" in p.stdout
    p = subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline", "events",
                        "-e", ep, "-u", "ghost"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "ghost" in (p.stdout + p.stderr)
    client = RESTfulClient(ep)
    client.terminate_model(UID)
    ev = client.get_model_events(UID)
    assert ev[-1]["event_content"] == "Terminated" and ev[-1]["kind"] == "terminate"
    with pytest.raises(RESTfulClientError) as e:
        client.list_model_replicas(UID)
    assert e.value.status_code == 404
