"""End-to-end faults: a model process that dies, and server shutdown leaving no process."""

import os
import signal

import psutil
import pytest
import requests

from .conftest import SMOLLM, start_server, wait_gone

MSG = [{"role": "user", "content": "Hi"}]


def model_pids(endpoint, uid):
    d = requests.get(f"{endpoint}/v1/models/{uid}").json()
    return [r["pid"] for r in d["replicas"]]


def test_dead_model_process_gives_503_and_can_be_relaunched(endpoint):
    uid = "crashy"
    r = requests.post(endpoint + "/v1/models", json={"model_name": SMOLLM, "model_uid": uid})
    assert r.status_code == 200, r.text
    (pid,) = model_pids(endpoint, uid)
    os.kill(pid, signal.SIGKILL)
    assert wait_gone([pid]) == []
    r = requests.post(endpoint + "/v1/chat/completions",
                      json={"model": uid, "messages": MSG, "max_tokens": 2}, timeout=30)
    assert r.status_code == 503, r.text
    assert uid in r.json()["detail"] and "launch it again" in r.json()["detail"]
    # the other model keeps serving
    ok = requests.post(endpoint + "/v1/chat/completions",
                       json={"model": SMOLLM, "messages": MSG, "max_tokens": 2}, timeout=60)
    assert ok.status_code == 200
    # terminate and launch again under the same uid, without restarting anything else
    assert requests.delete(f"{endpoint}/v1/models/{uid}").status_code == 200
    r = requests.post(endpoint + "/v1/models", json={"model_name": SMOLLM, "model_uid": uid})
    assert r.status_code == 200, r.text
    r = requests.post(endpoint + "/v1/chat/completions",
                      json={"model": uid, "messages": MSG, "max_tokens": 2}, timeout=60)
    assert r.status_code == 200
    assert requests.delete(f"{endpoint}/v1/models/{uid}").status_code == 200


def test_terminate_ends_the_model_process(endpoint):
    uid = "short-lived"
    assert requests.post(endpoint + "/v1/models",
                         json={"model_name": SMOLLM, "model_uid": uid}).status_code == 200
    pids = model_pids(endpoint, uid)
    assert requests.delete(f"{endpoint}/v1/models/{uid}").status_code == 200
    assert wait_gone(pids) == []
    assert requests.get(f"{endpoint}/v1/models/{uid}").status_code == 404


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGKILL])
def test_server_shutdown_leaves_no_model_process(tmp_path, sig):
    srv = start_server(tmp_path)
    try:
        r = requests.post(srv.endpoint + "/v1/models", json={"model_name": SMOLLM})
        assert r.status_code == 200, r.text
        server_proc = psutil.Process(srv.proc.pid)
        children = server_proc.children(recursive=True)
        assert model_pids(srv.endpoint, SMOLLM)[0] in [c.pid for c in children]
    finally:
        rc = srv.stop(sig)
    if sig != signal.SIGKILL:
        assert rc == 0, srv.log()
    assert wait_gone([c.pid for c in children]) == []
