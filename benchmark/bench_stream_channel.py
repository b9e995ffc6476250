"""The stream channel against RPC pulls (issue 26), in one run: two ``xinference-local``
servers with the bundled SmolLM2 on llama.cpp, one with ``XINFERENCE_STREAM_CHANNEL=1``
(SSE frames over the model process's stream channel), one with ``0`` (every chunk pulled
with an actor call); fixed-length greedy streams (``ignore_eos``) alternate between them,
and :class:`benchmark.bench_serving.CpuMeter` counts CPU per streamed token of the API
process and of the model process's event loop.

Run: ``.venv/bin/python -m benchmark.bench_stream_channel`` (``BENCH_STREAMS`` streams per
side, default 6). Prints one line per side; writes nothing (the figures go to the
``serving-profile`` section of doc/benchmarks.md by hand, with the machine's load).
"""

from __future__ import annotations

import os
import tempfile

import psutil

from . import bench_serving as b
from .common import start_server, stop_server


def main() -> None:
    n = int(os.environ.get("BENCH_STREAMS", "6"))
    sides = {}
    try:
        for flag in ("1", "0"):
            os.environ["XINFERENCE_STREAM_CHANNEL"] = flag  # inherited by the server
            proc, url, _ = start_server(tempfile.mkdtemp(prefix="xinf-channel-"))
            sides[flag] = (proc, url)
            b.launch(url)
            b.server_stream(url, "warm up")
        meters = {f: b.CpuMeter(psutil.Process(p.pid),
                                b.model_process(psutil.Process(p.pid)))
                  for f, (p, _) in sides.items()}
        rows = {f: [] for f in sides}
        for i in range(n):
            for flag, (_, url) in sides.items():
                rows[flag].append(meters[flag].server(
                    lambda: b.server_stream(url, b.PROMPTS[i % len(b.PROMPTS)],
                                            ignore_eos=True)))
        print("load average", os.getloadavg())
        for flag in sides:
            ms = {k: round(v, 3) for k, v in meters[flag].ms().items()}
            print("channel" if flag == "1" else "rpc pulls", "tokens/s",
                  round(b.summarize(rows[flag])[1], 1), "CPU ms/token", ms, flush=True)
    finally:
        for proc, _ in sides.values():
            stop_server(proc)


if __name__ == "__main__":
    main()
