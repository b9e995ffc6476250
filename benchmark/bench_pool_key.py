"""Cost of the cluster key (signed xoscar frames) on the per-token path (issue 22).

The gateway pulls a stream's chunks from the model process with one ``next_chunks`` RPC
per batch of ready chunks; with ``XOSCAR_AUTH_KEY`` set every frame of that RPC (request
and answer) is HMAC-SHA256-signed and checked. This measures that RPC as the gateway makes
it: a main pool in this process, the actor in a sub-pool process (as a model is), and
``ROUNDS`` calls answering one OpenAI chat chunk each (about 300 bytes, the size of one
token's chunk), without and with a key, each in a fresh interpreter so the environment
decides. Prints the median and p99 per call and the difference.

Run: ``.venv/bin/python benchmark/bench_pool_key.py`` (about 20 s on 2 cores);
``BENCH_ROUNDS`` (default 3000) calls per mode.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys

_CHILD = r"""
import asyncio, json, os, sys, time
import xoscar as xo

CHUNK = {"id": "chatcmpl-0123456789abcdef", "object": "chat.completion.chunk",
         "created": 1765000000, "model": "smollm2-instruct", "system_fingerprint": None,
         "choices": [{"index": 0, "delta": {"content": " token"}, "logprobs": None,
                      "finish_reason": None}]}


class Chunks(xo.StatelessActor):
    async def next_chunks(self, stream_id):
        return [CHUNK]


async def main(rounds):
    pool = await xo.create_actor_pool("127.0.0.1", n_process=1)
    try:
        sub = pool.sub_processes and list(pool.sub_processes)[0]
        ref = await xo.create_actor(Chunks, address=sub, uid="chunks")
        for _ in range(200):  # warm up the connection
            await ref.next_chunks("s")
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            await ref.next_chunks("s")
            times.append(time.perf_counter() - t0)
        print(json.dumps(times))
    finally:
        await pool.stop()

asyncio.run(main(int(sys.argv[1])))
"""


def run(rounds: int, key) -> list:
    env = {k: v for k, v in os.environ.items() if k != "XOSCAR_AUTH_KEY"}
    if key:
        env["XOSCAR_AUTH_KEY"] = key
    out = subprocess.run([sys.executable, "-c", _CHILD, str(rounds)], env=env,
                         capture_output=True, text=True, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    rounds = int(os.environ.get("BENCH_ROUNDS", "3000"))
    results = {}
    for label, key in (("no key", None), ("cluster key", "k" * 64),
                       ("no key (again)", None), ("cluster key (again)", "k" * 64)):
        t = sorted(run(rounds, key))
        results[label] = (statistics.median(t), t[int(len(t) * 0.99)])
        print(f"{label:22s} median {results[label][0] * 1e6:7.1f} us   "
              f"p99 {results[label][1] * 1e6:7.1f} us")
    off = min(results["no key"][0], results["no key (again)"][0])
    on = min(results["cluster key"][0], results["cluster key (again)"][0])
    print(f"signing adds {(on - off) * 1e6:.1f} us per next_chunks call "
          f"({(on / off - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
