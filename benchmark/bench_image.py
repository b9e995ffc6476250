"""Image generation benchmark (issue 14): text-to-image through the server against the
same pipeline in-process, in one run.

No diffusion weights ship in a package here, so both sides run the small random-weight
Stable Diffusion pipeline of ``tests/diffusion_helpers.py`` (a real SD UNet, VAE, CLIP text
encoder and DDIM scheduler at a tiny size), loaded from the same directory, float32 on the
CPU, same prompt, size, steps and seeds:

* in-process: ``AutoPipelineForText2Image.from_pretrained(dir)(prompt, ...)`` → PIL images
  (what an application gets by itself);
* server: ``xinference-local`` with the directory registered as a custom image model
  (``model_uri``), ``POST /v1/images/generations`` with ``response_format="b64_json"``
  (the server also encodes PNGs, base64 and JSON, and carries them over HTTP).

Rounds alternate between the two so that load from other work on the machine hits both
alike. Images/s and the ratio go to the "image-generation" section of doc/benchmarks.md.
Target: server >= 0.95x in-process.

Run: ``.venv/bin/python -m benchmark.bench_image`` (under a minute on 2
cores). ``BENCH_SIZE`` (default 96), ``BENCH_STEPS`` (default 8) and ``BENCH_ROUNDS``
(default 4, of ``BENCH_IMAGES`` = 2 images each) change the workload.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import requests

from .common import machine, start_server, stop_server, write_section
from tests.diffusion_helpers import build_tiny_sd

SIZE = int(os.environ.get("BENCH_SIZE", "96"))
STEPS = int(os.environ.get("BENCH_STEPS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "4"))
IMAGES = int(os.environ.get("BENCH_IMAGES", "2"))
PROMPT = "a photo of a red car on a bench"
MODEL = "bench-sd"


def main() -> None:
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        # As in the model process: OpenMP threads wait passively instead of spinning (on
        # a shared CPU spinning made this pipeline 10-40x slower here). Before torch loads.
        from xinference.model.embedding.engine_utils import prepare_torch_env

        prepare_torch_env()
        path = build_tiny_sd(Path(tmp) / "sd")
        import torch
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(path, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)

        def in_process(seed: int) -> None:
            gen = torch.Generator("cpu").manual_seed(seed)
            out = pipe(PROMPT, num_inference_steps=STEPS, height=SIZE, width=SIZE,
                       guidance_scale=1.0, generator=gen)
            assert out.images[0].size == (SIZE, SIZE)

        proc, url, _ = start_server(str(Path(tmp) / "home"))
        try:
            r = requests.post(f"{url}/v1/model_registrations/image", json={"model": json.dumps(
                {"model_name": MODEL, "model_uri": path, "model_ability": ["text2image"],
                 "max_image_size": 1024})}, timeout=60)
            r.raise_for_status()
            r = requests.post(f"{url}/v1/models", json={"model_name": MODEL,
                                                        "model_type": "image"}, timeout=600)
            r.raise_for_status()
            session = requests.Session()

            def server(seed: int) -> None:
                r = session.post(f"{url}/v1/images/generations", json={
                    "model": MODEL, "prompt": PROMPT, "size": f"{SIZE}x{SIZE}",
                    "response_format": "b64_json", "num_inference_steps": STEPS,
                    "guidance_scale": 1.0, "seed": seed}, timeout=600)
                r.raise_for_status()
                assert len(r.json()["data"]) == 1

            server(0)  # warm both up
            in_process(0)
            spent = {"in-process": 0.0, "server": 0.0}
            calls = {"in-process": [], "server": []}
            for rnd in range(ROUNDS):
                order = [("in-process", in_process), ("server", server)]
                if rnd % 2:
                    order.reverse()
                for name, fn in order:
                    for i in range(IMAGES):
                        t0 = time.perf_counter()
                        fn(1 + i)
                        calls[name].append(time.perf_counter() - t0)
                        spent[name] += calls[name][-1]
        finally:
            stop_server(proc)
    n = ROUNDS * IMAGES
    import statistics

    rate = {k: n / v for k, v in spent.items()}
    med = {k: statistics.median(v) for k, v in calls.items()}
    ratio = rate["server"] / rate["in-process"]
    med_ratio = med["in-process"] / med["server"]
    load_end = os.getloadavg()[0]

    def row(label: str, key: str) -> str:
        return (f"| {label} | {n} | {spent[key]:.2f} | {rate[key]:.2f} | "
                f"{med[key]:.3f} |")

    md = f"""## Image generation (`python -m benchmark.bench_image`)

Machine: {machine()}, CPU, load average {load_start:.1f} at the start and {load_end:.1f} at
the end (other work on the same cores). Pipeline: the tiny random-weight Stable Diffusion of
`tests/diffusion_helpers.py` (SD UNet 16/32 channels, VAE, 2-layer CLIP text encoder, DDIM),
float32, `OMP_WAIT_POLICY=PASSIVE` on both sides, {SIZE}x{SIZE}, {STEPS} steps, guidance 1.0,
one image per request, seeds 1..{IMAGES}; {ROUNDS} alternating rounds of {IMAGES} images each
side. The server answers `b64_json` PNGs over HTTP; in-process stops at PIL images.

| path | images | seconds | images/s | median s/image |
| --- | --- | --- | --- | --- |
{row("in-process `AutoPipelineForText2Image`", "in-process")}
{row("server `POST /v1/images/generations`", "server")}

Server vs in-process: **{ratio:.2f}x** images/s over the run, {med_ratio:.2f}x by median
time per image (target >= 0.95x). Run time {time.perf_counter() - t_start:.0f} s.

Both sides run the same pipeline call in a process of their own; what the server adds per
image is a PNG encode, base64, JSON and an HTTP round trip (a few milliseconds at this
size). On a shared machine the totals swing with other work from run to run (two runs at
load average 10-12 gave 0.60x and 1.29x); the median time per image is the steadier figure.
"""
    write_section("image-generation", md)
    print(md)


if __name__ == "__main__":
    main()
