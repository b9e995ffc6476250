"""Cluster mode end to end: ``xinference-supervisor`` and ``xinference-worker`` processes.

Real processes on localhost, each worker on its own loopback address (127.0.0.2,
127.0.0.3: Linux routes all of 127/8 to ``lo``) so ``worker_ip`` can tell them apart, each
with its own ``XINFERENCE_HOME`` like separate machines. Heartbeats are fast here (every
0.5 s, dead after 6 missed) so failures are noticed in about 3-4 s; every wait is a bounded
poll.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import openai
import psutil
import pytest
import requests

import xinference
from xinference.client import RESTfulClient
from xinference.client.restful_client import RESTfulClientError

from .conftest import SMOLLM, LoggedProcess, free_port, wait_gone, wait_until
from .test_custom_models import smol_family

INTERVAL, THRESHOLD = 0.5, 6
DEAD_BOUND = INTERVAL * (THRESHOLD + 1)  # documented bound for declaring a worker dead
ENV = {"XINFERENCE_HEALTH_CHECK_INTERVAL": str(INTERVAL),
       "XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD": str(THRESHOLD),
       "XINFERENCE_HEALTH_CHECK_TIMEOUT": "3"}
MSG = [{"role": "user", "content": "Say hi"}]
W1, W2 = "127.0.0.2", "127.0.0.3"




class Proc(LoggedProcess):
    """A cluster process started through its installed command line."""

    def __init__(self, name: str, args: List[str], home: Path, log_dir: Path,
                 env: Optional[Dict[str, str]] = None):
        super().__init__(args, home, log_dir / f"{name}-{time.monotonic_ns()}.log",
                         dict(ENV, **(env or {})))


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


class Cluster:
    """A supervisor and workers; ``endpoint`` is the REST API."""

    def __init__(self, tmp: Path, env: Optional[Dict[str, str]] = None):
        self.tmp = tmp
        self.env = env  # on top of ENV, for every process of this cluster
        self.port, self.sport = free_port(), free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.supervisor: Optional[Proc] = None
        self.workers: Dict[str, Proc] = {}
        self.worker_ports: Dict[str, int] = {}

    def start_supervisor(self) -> Proc:
        self.supervisor = Proc("supervisor", [
            _bin("xinference-supervisor"), "-H", "127.0.0.1", "-p", str(self.port),
            "--supervisor-port", str(self.sport)], self.tmp / "supervisor", self.tmp,
            self.env)
        wait_until(lambda: self._ok("/status"), 60, "the supervisor's REST API")
        return self.supervisor

    def start_worker(self, host: str, env: Optional[Dict[str, str]] = None) -> Proc:
        port = self.worker_ports.setdefault(host, free_port())
        p = Proc(f"worker-{host}", [
            _bin("xinference-worker"), "-e", self.endpoint, "-H", host,
            "--worker-port", str(port)], self.tmp / f"worker-{host}", self.tmp,
            dict(self.env or {}, **(env or {})))
        self.workers[host] = p
        wait_until(lambda: f"{host}:{port}" in self.worker_addresses(), 60,
                   f"worker {host} to register")
        return p

    def _ok(self, path: str) -> bool:
        try:
            return requests.get(self.endpoint + path, timeout=2).ok
        except requests.RequestException:
            return False

    def worker_addresses(self) -> List[str]:
        try:
            r = requests.get(self.endpoint + "/v1/workers", timeout=5)
        except requests.RequestException:
            return []
        return [w["address"] for w in r.json()] if r.ok else []

    def chat(self, model: str, max_tokens: int = 4) -> requests.Response:
        return requests.post(self.endpoint + "/v1/chat/completions", timeout=60,
                             json={"model": model, "messages": MSG, "max_tokens": max_tokens})

    def replicas(self, uid: str) -> List[dict]:
        r = requests.get(f"{self.endpoint}/v1/models/{uid}", timeout=10)
        assert r.status_code == 200, r.text
        return r.json()["replicas"]

    def logs(self) -> str:
        procs = ([self.supervisor] if self.supervisor else []) + list(self.workers.values())
        return "\n".join(p.log()[-3000:] for p in procs if not p._log.closed)

    def stop(self):
        for p in list(self.workers.values()):
            p.stop()
        if self.supervisor:
            self.supervisor.stop()


def children(pid: int) -> List[int]:
    return [c.pid for c in psutil.Process(pid).children(recursive=True)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start_supervisor()
        c.start_worker(W1)
        c.start_worker(W2)
        yield c
    finally:
        c.stop()


def test_cluster_routes(cluster):
    client = RESTfulClient(cluster.endpoint)
    nodes = client.get_cluster_info()
    assert [n["node_type"] for n in nodes] == ["Supervisor", "Worker", "Worker"]
    assert nodes[0]["address"] == requests.get(cluster.endpoint + "/v1/address").json()
    for n in nodes:
        assert n["cpu_count"] >= 1 and n["memory_total"] > n["memory_available"] > 0
        assert isinstance(n["gpus"], list) and n["gpu_count"] == len(n["gpus"])
    workers = client.get_workers_info()
    assert sorted(w["ip_address"] for w in workers) == [W1, W2]
    assert all(w["status"] == "alive" and w["models"] == [] for w in workers)
    assert client.get_cluster_version()["version"] == xinference.__version__


@pytest.mark.parametrize("body, status, text", [
    ({"worker_ip": "127.0.0.9"}, 400, "No worker at '127.0.0.9'"),
    ({"n_gpu": 1}, 400, "asks for more GPUs than the worker has (0)"),
    ({"gpu_idx": [0]}, 400, "GPU index [0] is not on this worker"),
    ({"n_gpu": "many"}, 400, "'n_gpu' must be 'auto'"),
])
def test_launch_no_worker_can_hold(cluster, body, status, text):
    r = requests.post(cluster.endpoint + "/v1/models",
                      json={"model_name": SMOLLM, "model_uid": "nope", **body}, timeout=30)
    assert r.status_code == status, r.text
    assert text in r.json()["detail"]
    assert requests.get(cluster.endpoint + "/v1/models/nope").status_code == 404


def test_replicas_failover_dead_worker_and_rejoin(cluster):
    client = RESTfulClient(cluster.endpoint)
    oai = openai.Client(api_key="not empty", base_url=cluster.endpoint + "/v1", max_retries=0)
    assert client.launch_model(model_name=SMOLLM, model_engine="llama.cpp", replica=2) == SMOLLM
    reps = cluster.replicas(SMOLLM)
    by_host = {r["worker_address"].split(":")[0]: r for r in reps}
    assert sorted(by_host) == [W1, W2], reps  # spread over both workers
    for host, rep in by_host.items():  # each replica is a process of its worker
        assert rep["status"] == "ready" and rep["pid"] in children(cluster.workers[host].pid)
    # pinned to W1: the only replica of "solo" will die with it
    client.launch_model(model_name=SMOLLM, model_uid="solo", worker_ip=W1)
    assert [r["worker_address"].split(":")[0] for r in cluster.replicas("solo")] == [W1]
    for _ in range(4):
        out = oai.chat.completions.create(model=SMOLLM, messages=MSG, max_tokens=4)
        assert out.choices[0].message.content

    w1_models = [by_host[W1]["pid"], cluster.replicas("solo")[0]["pid"]]
    cluster.workers[W1].stop(signal.SIGKILL)
    killed_at = time.monotonic()
    dropped: List[float] = []  # when /v1/workers stopped listing W1, polled meanwhile
    watcher = threading.Thread(target=lambda: dropped.append(wait_until(
        lambda: W1 not in [a.split(":")[0] for a in cluster.worker_addresses()] and
        time.monotonic(), DEAD_BOUND + 10, "W1 to be dropped from /v1/workers")))
    watcher.start()
    for _ in range(4):  # the other replica answers, before and after W1 is declared dead
        out = oai.chat.completions.create(model=SMOLLM, messages=MSG, max_tokens=4)
        assert out.choices[0].message.content
    # the model processes of W1 end by themselves (sub pools watch their parent)
    assert wait_gone(w1_models) == [], "W1's model processes still run"
    watcher.join()
    assert dropped, "W1 was not dropped from /v1/workers in time"
    assert [a.split(":")[0] for a in cluster.worker_addresses()] == [W2]
    nodes = client.get_cluster_info()
    assert [n["ip_address"] for n in nodes if n["node_type"] == "Worker"] == [W2]
    assert [r["worker_address"].split(":")[0] for r in cluster.replicas(SMOLLM)] == [W2]
    assert cluster.chat(SMOLLM).status_code == 200
    # "solo" lost its only replica: reported gone, never a hang
    r = cluster.chat("solo")
    assert r.status_code == 503 and "is gone" in r.json()["detail"], r.text
    assert requests.get(cluster.endpoint + "/v1/models/solo").status_code == 503
    assert "solo" not in client.list_models()
    # the documented bound, with 3 s of slack for a loaded machine (polls, slow heartbeats)
    assert dropped[0] - killed_at <= DEAD_BOUND + 3.0, (
        f"dead worker dropped {dropped[0] - killed_at:.2f}s after kill -9 "
        f"(bound {DEAD_BOUND}s + 3s)")

    # a custom model registered before W1 comes back ...
    client.register_model("LLM", smol_family("cluster-smol"))
    cluster.start_worker(W1)  # ... the restarted worker rejoins by itself
    assert requests.delete(cluster.endpoint + "/v1/models/solo").status_code == 200
    # ... and launches that custom model (its loader carries the whole family)
    client.launch_model(model_name="cluster-smol", model_uid="late", worker_ip=W1)
    (rep,) = cluster.replicas("late")
    assert rep["worker_address"].split(":")[0] == W1
    assert rep["pid"] in children(cluster.workers[W1].pid)
    assert cluster.chat("late").status_code == 200
    client.terminate_model("late")
    client.terminate_model(SMOLLM)
    assert wait_gone([rep["pid"]]) == [], "the terminated model's process still runs"
    client.unregister_model("LLM", "cluster-smol")


def test_dead_model_process_is_reported_and_relaunched(cluster):
    client = RESTfulClient(cluster.endpoint)
    client.launch_model(model_name=SMOLLM, model_uid="pair", replica=2)
    reps = cluster.replicas("pair")
    assert len({r["worker_address"] for r in reps}) == 2
    victim = reps[0]
    os.kill(victim["pid"], signal.SIGKILL)
    # its worker notices and reports it with its next heartbeat, before any request
    wait_until(lambda: [r["status"] for r in cluster.replicas("pair")
                        if r["replica_uid"] == victim["replica_uid"]] == ["dead"],
               DEAD_BOUND + 5, "the dead replica to be reported")
    for _ in range(3):  # the ready replica serves
        assert cluster.chat("pair").status_code == 200
    # nothing else restarted: terminate and launch again
    client.terminate_model("pair")
    client.launch_model(model_name=SMOLLM, model_uid="pair", replica=2)
    assert [r["status"] for r in cluster.replicas("pair")] == ["ready", "ready"]
    assert cluster.chat("pair").status_code == 200
    client.terminate_model("pair")
    with pytest.raises(RESTfulClientError) as e:
        client.describe_model("pair")
    assert e.value.status_code == 404


def test_supervisor_restart_keeps_worker_models(tmp_path):
    c = Cluster(tmp_path)
    try:
        c.start_supervisor()
        worker = c.start_worker(W2)
        client = RESTfulClient(c.endpoint)
        client.launch_model(model_name=SMOLLM, model_engine="llama.cpp")
        (rep,) = c.replicas(SMOLLM)
        c.supervisor.stop(signal.SIGKILL)
        assert not c._ok("/status")
        c.start_supervisor()  # same ports; the worker keeps running
        wait_until(lambda: SMOLLM in client.list_models(), DEAD_BOUND + 10,
                   "the worker to report its model to the new supervisor")
        assert c.replicas(SMOLLM) == [rep]  # same process, same place
        oai = openai.Client(api_key="not empty", base_url=c.endpoint + "/v1", max_retries=0)
        out = oai.chat.completions.create(model=SMOLLM, messages=MSG, max_tokens=4)
        assert out.choices[0].message.content
        assert worker.proc.poll() is None and rep["pid"] in children(worker.pid)
        client.terminate_model(SMOLLM)
        assert wait_gone([rep["pid"]]) == [], "the model process still runs"
    finally:
        c.stop()


def test_local_server_is_a_one_node_cluster(tmp_path):
    from .conftest import start_server

    srv = start_server(tmp_path)
    try:
        nodes = RESTfulClient(srv.endpoint).get_cluster_info()
        assert [n["node_type"] for n in nodes] == ["Supervisor", "Worker"]
        assert nodes[1]["local"] is True and nodes[1]["status"] == "alive"
        r = requests.post(srv.endpoint + "/v1/models",
                          json={"model_name": SMOLLM, "n_gpu": 64}, timeout=30)
        assert r.status_code == 400 and "more GPUs than the worker has" in r.json()["detail"]
    finally:
        assert srv.stop() == 0, srv.log()
