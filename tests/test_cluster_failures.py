"""Cluster failure modes of ``doc/cluster.md`` ("Failures", "Placement"), end to end on real
``xinference-supervisor`` / ``xinference-worker`` processes serving the packaged
all-MiniLM-L6-v2 embedding model (no LLM engine needed).

Timing: heartbeats every 0.5 s, dead after 6 missed, calls time out after 3 s
(``tests/test_cluster.py``'s ``ENV``). Bounds are asserted with the margin named next to
each; waits are bounded polls.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time

import psutil
import pytest
import requests

from xinference.client import RESTfulClient

from .conftest import free_port, wait_gone, wait_until
from .test_cluster import DEAD_BOUND, ENV, W1, W2, Cluster, children

EMB = "all-MiniLM-L6-v2"
#: slack for a loaded 2-core machine on top of a documented bound
MARGIN = 3.0


def embed(endpoint: str, model: str, inputs, timeout: float = 120) -> requests.Response:
    return requests.post(f"{endpoint}/v1/embeddings", json={"model": model, "input": inputs},
                         timeout=timeout)


def hosts(cluster: Cluster):
    return [a.split(":")[0] for a in cluster.worker_addresses()]


def launch_embedding(cluster: Cluster, **kw) -> str:
    return RESTfulClient(cluster.endpoint).launch_model(model_name=EMB,
                                                        model_type="embedding", **kw)


@pytest.fixture
def cluster(tmp_path, request):
    c = Cluster(tmp_path, getattr(request, "param", None))
    try:
        c.start_supervisor()
        yield c
    finally:
        for p in c.workers.values():  # a stopped process ignores SIGTERM until continued
            if p.proc.poll() is None:
                os.kill(p.pid, signal.SIGCONT)
        c.stop()


#: a silent worker is declared dead only after 0.5 s x 24 = 12 s, far longer than the 2 s
#: call timeout, so a request that waited on it until then could not pass for skipped
SLOW_DEATH = {"XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD": "24",
              "XINFERENCE_HEALTH_CHECK_TIMEOUT": "2"}


@pytest.mark.parametrize("cluster", [SLOW_DEATH], indirect=True)
def test_silent_worker_is_skipped_within_the_timeout_then_declared_dead(cluster):
    """SIGSTOP: the worker neither answers nor closes its connections (a machine that hangs
    or drops off the network). Requests go to the other replica, none waits longer than the
    health-check timeout, and the worker is declared dead within interval x (threshold+1)."""
    timeout = float(SLOW_DEATH["XINFERENCE_HEALTH_CHECK_TIMEOUT"])
    dead_bound = float(ENV["XINFERENCE_HEALTH_CHECK_INTERVAL"]) * (
        int(SLOW_DEATH["XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD"]) + 1)
    cluster.start_worker(W1)
    cluster.start_worker(W2)
    uid = launch_embedding(cluster, replica=2)
    by_host = {r["worker_address"].split(":")[0]: r for r in cluster.replicas(uid)}
    assert sorted(by_host) == [W1, W2]
    worker = cluster.workers[W1]
    os.kill(worker.pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        for i in range(6):  # round-robin reaches W1's replica at least twice
            t0 = time.monotonic()
            r = embed(cluster.endpoint, uid, f"hello {i}")
            took = time.monotonic() - t0
            assert r.status_code == 200, r.text
            assert took <= timeout + MARGIN, f"request {i} waited {took:.1f}s on a silent worker"
        assert W1 in hosts(cluster), "declared dead already: the requests proved nothing"
        wait_until(lambda: W1 not in hosts(cluster), dead_bound + MARGIN + 10,
                   "the silent worker to be declared dead")
        dropped_after = time.monotonic() - stopped_at
        assert dropped_after <= dead_bound + MARGIN, dropped_after
        assert [r["worker_address"].split(":")[0] for r in cluster.replicas(uid)] == [W2]
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    # the machine comes back: it registers again with its next heartbeat
    wait_until(lambda: W1 in hosts(cluster), dead_bound + MARGIN + 10,
               "the resumed worker to register again")
    assert embed(cluster.endpoint, uid, "back").status_code == 200


def _busy(pid: int, min_cpu: float = 30.0, window: float = 0.5) -> bool:
    try:
        return psutil.Process(pid).cpu_percent(interval=window) >= min_cpu
    except psutil.NoSuchProcess:
        return False


def test_in_flight_request_fails_when_its_worker_vanishes(cluster):
    """A request running on a model process whose worker is killed fails with 503 (it is
    not retried elsewhere, and it does not hang); the model is then reported gone."""
    cluster.start_worker(W1)
    uid = launch_embedding(cluster, model_uid="solo-emb")
    (rep,) = cluster.replicas(uid)
    assert embed(cluster.endpoint, uid, "warm up").status_code == 200
    # 2048 inputs (the most a request may carry) of about 200 tokens: tens of seconds here
    big = [f"sentence number {i}: " + "ships, cats and the wide blue sea " * 25
           for i in range(2048)]
    result = {}

    def run():
        t0 = time.monotonic()
        try:
            result["response"] = embed(cluster.endpoint, uid, big, timeout=300)
        except requests.RequestException as e:
            result["error"] = e
        result["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run)
    t.start()
    # positive control: the request is being computed (the model process is busy) and
    # has not returned, when the worker dies
    wait_until(lambda: not t.is_alive() or _busy(rep["pid"]), 60,
               "the model process to compute the request")
    assert t.is_alive(), result  # still running: the test would prove nothing otherwise
    cluster.workers[W1].stop(signal.SIGKILL)
    t.join(60)
    assert not t.is_alive(), "the in-flight request hangs after its worker died"
    assert "error" not in result, result
    r = result["response"]
    assert r.status_code == 503, (r.status_code, r.text[:500])
    assert wait_gone([rep["pid"]]) == [], "the model process outlived its worker"
    # 503 at once (its worker is unreachable), then "gone" once the worker is declared dead
    r = embed(cluster.endpoint, uid, "x")
    assert r.status_code == 503, r.text
    wait_until(lambda: "is gone" in embed(cluster.endpoint, uid, "x").json()["detail"],
               DEAD_BOUND + MARGIN + 10, "the model to be reported gone")


def test_supervisor_on_another_internal_port_is_found_through_the_endpoint(cluster):
    worker = cluster.start_worker(W2)
    uid = launch_embedding(cluster)
    (rep,) = cluster.replicas(uid)
    old_address = requests.get(cluster.endpoint + "/v1/address", timeout=5).json()
    cluster.supervisor.stop(signal.SIGKILL)
    cluster.sport = free_port()  # same REST port, new actor-pool port
    cluster.start_supervisor()
    new_address = requests.get(cluster.endpoint + "/v1/address", timeout=5).json()
    assert new_address != old_address and new_address.endswith(f":{cluster.sport}")
    wait_until(lambda: uid in RESTfulClient(cluster.endpoint).list_models(),
               DEAD_BOUND + MARGIN + 30, "the worker to find the moved supervisor")
    assert cluster.replicas(uid) == [rep]  # the same process kept serving
    assert embed(cluster.endpoint, uid, "still here").status_code == 200
    assert worker.proc.poll() is None and rep["pid"] in children(worker.pid)


def test_worker_stopped_with_sigterm_leaves_cleanly(cluster):
    cluster.start_worker(W1)
    worker = cluster.start_worker(W2)
    uid = launch_embedding(cluster, model_uid="on-w2", worker_ip=W2)
    (rep,) = cluster.replicas(uid)
    assert worker.stop(signal.SIGTERM) == 0, worker.log()[-3000:]
    # it told the supervisor it leaves: gone at once, not after the dead-worker bound
    assert hosts(cluster) == [W1]
    assert wait_gone([rep["pid"]], timeout=10) == [], "its model process still runs"
    assert uid not in RESTfulClient(cluster.endpoint).list_models()
    assert embed(cluster.endpoint, uid, "x").status_code in (404, 503)


FAKE_SMI = """#!/bin/sh
# a machine with one GPU, as nvidia-smi --query-gpu=... --format=csv,noheader,nounits
echo "0, Fake GPU, 16384, 10"
"""


def test_busy_gpus_are_503_end_to_end(cluster, tmp_path):
    """A worker with one (fake, ``nvidia-smi`` on its PATH) GPU: a model holding it with
    ``n_gpu=1`` makes a second ``n_gpu=1`` launch 503 (busy), while ``n_gpu=2`` is 400
    (no worker has two). Terminating the first frees the GPU."""
    bindir = tmp_path / "fake-bin"
    bindir.mkdir()
    smi = bindir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    cluster.start_worker(W1, env={"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"})
    (info,) = RESTfulClient(cluster.endpoint).get_workers_info()
    if [g["name"] for g in info["gpus"]] != ["Fake GPU"]:
        pytest.skip(f"GPUs here are not the fake one: {info['gpus']}")

    body = {"model_name": EMB, "model_type": "embedding", "n_gpu": 1}
    r = requests.post(cluster.endpoint + "/v1/models", json=dict(body, model_uid="g1"),
                      timeout=120)
    assert r.status_code == 200, r.text
    assert cluster.replicas("g1")[0]["gpu_idx"] == [0]
    r = requests.post(cluster.endpoint + "/v1/models", json=dict(body, model_uid="g2"),
                      timeout=60)
    assert r.status_code == 503, r.text
    assert "GPUs [0] are used by other models" in r.json()["detail"], r.text
    r = requests.post(cluster.endpoint + "/v1/models",
                      json=dict(body, model_uid="g3", n_gpu=2), timeout=60)
    assert r.status_code == 400 and "more GPUs than the worker has (1)" in r.text, r.text
    assert requests.get(cluster.endpoint + "/v1/models/g2", timeout=5).status_code == 404
    assert requests.delete(cluster.endpoint + "/v1/models/g1", timeout=60).status_code == 200
    r = requests.post(cluster.endpoint + "/v1/models", json=dict(body, model_uid="g2"),
                      timeout=120)
    assert r.status_code == 200, r.text
