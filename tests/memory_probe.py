"""Run as ``python -m tests.memory_probe ENGINE CONTEXT [MODEL_PATH]``: load the bundled
SmolLM2 on ENGINE (``llama.cpp`` with ``n_ctx=CONTEXT``, or ``Transformers`` on the CPU
from the exported directory MODEL_PATH), run one prompt of about CONTEXT - 16 tokens, and
print JSON: resident memory before the load (engine library imported) and the peak after,
and the prompt's token count. Used by test_memory_estimate (a fresh process per engine,
so nothing else is resident)."""

from __future__ import annotations

import asyncio
import json
import os
import sys


def _peak_rss() -> int:
    """This process's peak resident memory (``VmHWM``), in bytes. Not ``ru_maxrss``: Linux
    carries that over from the forking parent (a big pytest process) across ``exec``."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def main() -> None:
    import psutil

    from xinference.model.llm.launch import plan_llm_launch
    from xinference.model.llm.llm_family import builtin_llm_families

    engine, ctx = sys.argv[1], int(sys.argv[2])
    fam = builtin_llm_families()["smollm2-instruct"]
    if engine == "llama.cpp":
        import xllamacpp  # noqa: F401  (imported before the baseline is read)

        loader, _ = plan_llm_launch(fam, "m", model_engine="llama.cpp", n_ctx=ctx, n_gpu=0,
                                    n_parallel=1)
    else:
        import torch  # noqa: F401
        import transformers  # noqa: F401

        loader, _ = plan_llm_launch(fam, "m", model_engine="Transformers",
                                    model_format="pytorch", model_size_in_billions="0_135",
                                    n_gpu=0, model_path=sys.argv[3])
    proc = psutil.Process()
    before = proc.memory_info().rss
    eng = loader.load()
    prompt = "hello " * (ctx - 16)

    async def run():
        return await eng.generate(prompt, {"max_tokens": 4})
    out = asyncio.run(run())
    peak = _peak_rss()
    print(json.dumps({"before": before, "peak": peak,
                      "prompt_tokens": out["usage"]["prompt_tokens"]}), flush=True)
    os._exit(0)  # engine threads need no orderly shutdown here


if __name__ == "__main__":
    main()
