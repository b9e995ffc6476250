"""A model process killed with SIGKILL: reported dead, and a persisted model restarted
within the restart limit (a real server; heartbeats every second)."""

from __future__ import annotations

import os
import signal

import pytest
import requests

from .conftest import minilm_dir, start_server, wait_until

pytestmark = pytest.mark.e2e


def _launch(endpoint: str, uid: str, persist: bool):
    r = requests.post(endpoint + "/v1/models", timeout=180, json={
        "model_name": "all-MiniLM-L6-v2", "model_type": "embedding", "model_uid": uid,
        "model_path": minilm_dir(), "persist": persist})
    assert r.status_code == 200, r.text


def _desc(endpoint: str, uid: str) -> dict:
    return requests.get(f"{endpoint}/v1/models/{uid}", timeout=10).json()


def _persisted(endpoint: str) -> dict:
    rows = requests.get(endpoint + "/v1/models/persisted", timeout=10).json()
    return {r["model_uid"]: r for r in rows}


def _embed(endpoint: str, uid: str) -> int:
    return requests.post(endpoint + "/v1/embeddings", json={"model": uid, "input": "hi"},
                         timeout=60).status_code


def test_killed_model_is_reported_dead_and_persisted_one_restarted(tmp_path):
    srv = start_server(tmp_path, env={"XINFERENCE_HEALTH_CHECK_INTERVAL": "1",
                                      "XINFERENCE_MODEL_RESTART_LIMIT": "1"})
    e = srv.endpoint
    try:
        _launch(e, "kept", persist=True)
        _launch(e, "plain", persist=False)
        # A model that is not persisted: reported dead, left so (503 says why).
        os.kill(_desc(e, "plain")["replicas"][0]["pid"], signal.SIGKILL)
        wait_until(lambda: _desc(e, "plain")["status"] == "error", 30, "plain reported dead")
        assert _desc(e, "plain")["replicas"][0]["status"] == "dead"
        models = {m["id"]: m for m in requests.get(e + "/v1/models", timeout=10).json()["data"]}
        assert models["plain"]["status"] == "error" and models["kept"]["status"] == "ready"
        r = requests.post(e + "/v1/embeddings", json={"model": "plain", "input": "x"},
                          timeout=30)
        assert r.status_code == 503 and "died" in r.json()["detail"], r.text
        # The persisted model: restarted under its uid with a new process.
        pid = _desc(e, "kept")["replicas"][0]["pid"]
        os.kill(pid, signal.SIGKILL)

        def restarted():
            d = _desc(e, "kept")
            return d.get("status") == "ready" and d["replicas"][0]["pid"] != pid

        wait_until(restarted, 90, "the persisted model to be restarted", step=0.5)
        assert _embed(e, "kept") == 200
        assert _persisted(e)["kept"]["status"] == "running"
        assert "Restarting the persisted model kept" in srv.log()
        # Over the limit (1 restart in the window): it stays dead, and says so.
        os.kill(_desc(e, "kept")["replicas"][0]["pid"], signal.SIGKILL)
        wait_until(lambda: _persisted(e)["kept"]["status"] == "dead", 30,
                   "the persisted row to say dead")
        row = _persisted(e)["kept"]
        assert "left dead" in row["error"], row
        assert _desc(e, "kept")["status"] == "error"
        # Terminating and launching again works as for any model.
        assert requests.delete(e + "/v1/models/kept", timeout=60).status_code == 200
        _launch(e, "kept", persist=True)
        assert _embed(e, "kept") == 200
    finally:
        srv.stop()
