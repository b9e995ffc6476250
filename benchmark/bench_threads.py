"""llama.cpp's thread count and ``n_batch`` through the server, with its own load counted
(issue 26): the data for the engine's default ``n_threads`` / ``n_batch`` rule.

One ``xinference-local`` server; the bundled SmolLM2-135M-Instruct (Q4_1) is launched once
per configuration, all at the same time (model uids ``t<threads>-b<n_batch>``): n_threads 1,
2 and every core (``BENCH_THREADS``, default ``1,2,<cores>``; duplicates dropped), each
with every ``n_batch`` of ``BENCH_BATCHES`` (default ``2048``, llama.cpp's; e.g.
``512,2048``). For each configuration, in rounds whose order rotates so that background
load hits all alike:

* one stream: decode tokens/s of a fixed-length greedy stream (``ignore_eos``);
* eight concurrent streams: aggregate tokens/s over wall clock;
* time to first token of a long prompt (about 1,500 tokens), where ``n_batch`` matters;
  each such prompt opens differently, so that no slot's prompt cache shortens the prefill.

The server's own CPU (API process and model process event loop) runs on the same cores as
llama.cpp's threads, so with every core busy decoding, each token's serving work preempts
a compute thread: these figures include that, which in-process measurements do not.

Run: ``.venv/bin/python -m benchmark.bench_threads`` on a quiet machine (a few minutes on
2 cores); ``--quick`` is a short smoke run. Writes the "threads" section of
doc/benchmarks.md (not with ``--quick``) with the load average at start and end.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Dict, List, Tuple

import requests

from .common import machine, start_server, stop_server, write_section

QUICK = "--quick" in sys.argv or os.environ.get("BENCH_QUICK") == "1"
if QUICK:
    os.environ["BENCH_QUICK"] = "1"  # write_section writes nothing
CORES = os.cpu_count() or 1
THREADS = sorted({int(x) for x in os.environ.get(
    "BENCH_THREADS", f"1,2,{CORES}").split(",") if int(x) > 0})
BATCHES = sorted({int(x) for x in os.environ.get("BENCH_BATCHES", "2048").split(",")})
MAX_TOKENS = 24 if QUICK else int(os.environ.get("BENCH_MAX_TOKENS", "128"))
ROUNDS = 1 if QUICK else int(os.environ.get("BENCH_ROUNDS", "3"))
STREAMS = 8
PROMPT = "Write a long story about a lighthouse keeper and the sea."
LONG_NOTES = " ".join(
    f"Note {i}: the keeper lit the lamp at dusk and logged the ships that passed."
    for i in range(12 if QUICK else 100))
_long_prompts = iter(range(1 << 30))


def long_prompt() -> str:
    """The long prompt, opening with a number never used before: llama.cpp's prompt cache
    (a slot keeps the tokens of its last prompt) cannot reuse any of it, so the time to
    first token is a whole prefill every time."""
    return f"Request {next(_long_prompts)}. Summarize the following notes. {LONG_NOTES}"


def stream(url: str, model: str, prompt: str, max_tokens: int) -> Tuple[float, int, float]:
    """One streamed greedy fixed-length chat: ``(seconds to the first token, completion
    tokens, seconds from the first to the last token)``."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens, "temperature": 0, "stream": True, "ignore_eos": True,
            "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    first = last = None
    tokens = 0
    with requests.post(url + "/v1/chat/completions", json=body, stream=True,
                       timeout=600) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            c = json.loads(line[6:])
            if c.get("usage"):
                tokens = c["usage"]["completion_tokens"]
            if c["choices"] and c["choices"][0]["delta"].get("content"):
                last = time.perf_counter()
                first = first or last
    return first - t0, tokens, last - first


def measure(url: str, model: str) -> Dict[str, float]:
    """One round of one configuration: one-stream decode tokens/s, 8-stream aggregate
    tokens/s, long-prompt time to first token (s)."""
    _, n, dec = stream(url, model, PROMPT, MAX_TOKENS)
    one = (n - 1) / dec
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(STREAMS) as pool:
        rows = list(pool.map(lambda _: stream(url, model, PROMPT, MAX_TOKENS),
                             range(STREAMS)))
    eight = sum(r[1] for r in rows) / (time.perf_counter() - t0)
    ttft = stream(url, model, long_prompt(), 4)[0]
    return {"one": one, "eight": eight, "ttft": ttft}


def main() -> None:
    load_start = os.getloadavg()
    configs = [(t, b) for t in THREADS for b in BATCHES]
    uid = {c: f"t{c[0]}-b{c[1]}" for c in configs}
    proc, url, _ = start_server(tempfile.mkdtemp(prefix="xinf-threads-"))
    results: Dict[Tuple[int, int], List[Dict[str, float]]] = {c: [] for c in configs}
    try:
        for (t, b), model in uid.items():
            r = requests.post(url + "/v1/models", timeout=300, json={
                "model_name": "smollm2-instruct", "model_engine": "llama.cpp",
                "model_uid": model, "n_threads": t, "n_batch": b})
            assert r.ok, r.text
            stream(url, model, "warm up", 4)
        for k in range(ROUNDS):
            for c in configs[k % len(configs):] + configs[:k % len(configs)]:
                results[c].append(measure(url, uid[c]))
                print(uid[c], results[c][-1], flush=True)
    finally:
        stop_server(proc)
    load_end = os.getloadavg()
    rows = []
    for c in configs:
        med = {k: statistics.median(r[k] for r in results[c]) for k in ("one", "eight", "ttft")}
        rows.append(f"| {c[0]} | {c[1]} | {med['one']:.1f} | {med['eight']:.1f} | "
                    f"{med['eight'] / med['one']:.2f}x | {med['ttft'] * 1000:.0f} ms |")
    quick = " Quick smoke run: not for comparison." if QUICK else ""
    md = f"""## llama.cpp threads and n_batch through the server (`python -m benchmark.bench_threads`)

Machine: {machine()}; load average {', '.join(f'{x:.2f}' for x in load_start)} at the start,
{', '.join(f'{x:.2f}' for x in load_end)} at the end.{quick} SmolLM2-135M-Instruct Q4_1,
greedy fixed-length streams of {MAX_TOKENS} tokens, {STREAMS} concurrent streams for the
aggregate, a prompt of about {len(long_prompt()) // 4} tokens for the time to first token
(a new one each time: no prompt-cache reuse);
median of {ROUNDS} round(s), configurations in rotating order, all served by one server at
once (the serving path's CPU counted).

| n_threads | n_batch | one stream tokens/s | 8 streams tokens/s | 8 / 1 | long-prompt TTFT |
| --- | --- | --- | --- | --- | --- |
""" + "\n".join(rows) + "\n"
    print(md, flush=True)
    write_section("threads", md)


if __name__ == "__main__":
    main()
