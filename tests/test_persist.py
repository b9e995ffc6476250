"""Models that survive a restart: a launch with ``persist`` comes back under the same uid
and options after the server stops (SIGTERM) or is killed (SIGKILL); a record that cannot
be launched is reported, not retried; terminating a model forgets it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest
import requests

from xinference.client import RESTfulClient
from xinference.client.restful_client import RESTfulClientError

from .conftest import minilm_dir, start_server, wait_gone, wait_until

pytestmark = pytest.mark.e2e

UID = "keep-emb"


def _embed(endpoint: str, uid: str = UID) -> requests.Response:
    return requests.post(f"{endpoint}/v1/embeddings", json={"model": uid, "input": "hi"},
                         timeout=120)


def _running(endpoint: str, uid: str) -> bool:
    try:
        r = requests.get(f"{endpoint}/v1/models/{uid}", timeout=5)
    except requests.RequestException:
        return False
    return r.status_code == 200 and r.json().get("status") == "ready"


def _pids(endpoint: str, uid: str):
    return [r["pid"] for r in requests.get(f"{endpoint}/v1/models/{uid}").json()["replicas"]]


def test_persisted_model_survives_sigterm_and_kill(tmp_path):
    srv = start_server(tmp_path)
    try:
        # Through the CLI's --persist, with options that must come back.
        r = subprocess.run(
            [sys.executable, "-m", "xinference.deploy.cmdline", "launch", "-e", srv.endpoint,
             "-n", "all-MiniLM-L6-v2", "-t", "embedding", "-u", UID, "--model-path",
             minilm_dir(), "--request-limits", "3", "--persist"],
            capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr
        client = RESTfulClient(srv.endpoint)
        client.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding",
                            model_uid="temp-emb", model_path=minilm_dir())
        persisted = client.list_persisted_models()
        assert [p["model_uid"] for p in persisted] == [UID]
        assert persisted[0]["status"] == "running"
        assert persisted[0]["launch"]["request_limits"] == 3
        first = _embed(srv.endpoint).json()["data"][0]["embedding"]
        old_pids = _pids(srv.endpoint, UID)
    finally:
        assert srv.stop(signal.SIGTERM) == 0
    assert not wait_gone(old_pids)

    # A record that cannot be launched: reported, not retried.
    (tmp_path / "persisted_models" / "broken.json").write_text(json.dumps(
        {"model_uid": "broken", "model_name": "no-such-model", "model_type": "LLM"}))
    (tmp_path / "persisted_models" / "garbage.json").write_text("{not json")

    srv = start_server(tmp_path)
    try:
        wait_until(lambda: _running(srv.endpoint, UID), 120, "the relaunch after SIGTERM")
        desc = requests.get(f"{srv.endpoint}/v1/models/{UID}").json()
        assert desc["request_limits"] == 3 and desc["model_type"] == "embedding"
        again = _embed(srv.endpoint).json()["data"][0]["embedding"]
        assert again == pytest.approx(first, abs=1e-5)
        assert not _running(srv.endpoint, "temp-emb")

        client = RESTfulClient(srv.endpoint)
        wait_until(lambda: "broken" in client.list_models(), 60, "the failed relaunch row")
        row = client.list_models()["broken"]
        assert row["status"] == "error" and "no-such-model" in row["error"]
        r = requests.post(f"{srv.endpoint}/v1/chat/completions", timeout=30, json={
            "model": "broken", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503 and "no-such-model" in r.json()["detail"]
        status = {p["model_uid"]: p["status"] for p in client.list_persisted_models()}
        assert status == {UID: "running", "broken": "failed"}
        assert "Skipping the persisted model record" in srv.log()
        instances = {i["model_uid"]: i["status"] for i in client.get_instance_info()}
        assert instances == {UID: "READY", "broken": "ERROR"}
        client.forget_persisted_model("broken")
        assert "broken" not in client.list_models()
        with pytest.raises(RESTfulClientError) as e:
            client.forget_persisted_model("broken")
        assert e.value.status_code == 404
        pids = _pids(srv.endpoint, UID)
        # kill -9: nothing is cleaned up, the record stays.
        srv.stop(signal.SIGKILL)
        for pid in pids:  # a model process the killed server left behind
            try:
                psutil.Process(pid).kill()
            except psutil.NoSuchProcess:
                pass
    finally:
        srv.stop()

    srv = start_server(tmp_path)
    try:
        wait_until(lambda: _running(srv.endpoint, UID), 120, "the relaunch after kill -9")
        assert _embed(srv.endpoint).status_code == 200
        # Terminating forgets the record: the next start launches nothing.
        RESTfulClient(srv.endpoint).terminate_model(UID)
        assert RESTfulClient(srv.endpoint).list_persisted_models() == []
        assert not os.path.exists(tmp_path / "persisted_models" / f"{UID}.json")
    finally:
        srv.stop()


def test_persisted_model_comes_back_when_its_cluster_worker_restarts(tmp_path):
    from .test_cluster import W1, Cluster

    c = Cluster(tmp_path)
    try:
        c.start_supervisor()
        worker = c.start_worker(W1)
        client = RESTfulClient(c.endpoint)
        client.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding",
                            model_uid=UID, model_path=minilm_dir(), persist=True)
        assert _embed(c.endpoint).status_code == 200
        pids = _pids(c.endpoint, UID)
        # The worker stops (its models with it) and starts again: the model comes back.
        assert worker.stop() == 0
        assert not wait_gone(pids)
        assert UID not in client.list_models()
        c.start_worker(W1)
        wait_until(lambda: _running(c.endpoint, UID), 120, "the relaunch on the worker")
        assert _embed(c.endpoint).status_code == 200
        assert _pids(c.endpoint, UID) != pids
        assert (tmp_path / "supervisor" / "persisted_models" / f"{UID}.json").is_file()
    finally:
        c.stop()
