"""Upper bounds of launch options, from the resources the workers report.

A launch that asks for more than the cluster can hold would start processes or allocate
caches until a machine runs out of memory; it is refused with 400 naming the cap instead:

- ``replica``: model processes in all, at most :data:`PROCESSES_PER_CORE` per CPU core (or
  per GPU, where a worker has more GPUs than cores) summed over the workers a launch may
  use; more only time-slice the same hardware.
- ``n_parallel`` (requests decoded together, llama.cpp slots): at most
  :data:`SLOTS_PER_CORE` per CPU core plus :data:`SLOTS_PER_GPU` per GPU of the largest
  worker (a replica runs on one worker).
- ``n_ctx`` (tokens of KV cache): at most the largest worker's memory (RAM plus GPU memory)
  divided by :data:`KV_BYTES_PER_TOKEN`, a floor of the KV cache one token takes in the
  smallest model served here (SmolLM2-135M: 30 layers x K and V x 192 x 2 bytes = 23 KiB),
  so a larger ``n_ctx`` cannot fit whatever the model.

Workers that have not reported their resources yet are left out; with no report at all
nothing is capped (the engine's own checks still apply).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional

from ..errors import InvalidRequestError

PROCESSES_PER_CORE = 4
SLOTS_PER_CORE = 8
SLOTS_PER_GPU = 64
KV_BYTES_PER_TOKEN = 16 * 1024


def launch_caps(statuses: Iterable[Dict[str, Any]]) -> Optional[Dict[str, int]]:
    """``{"replica", "n_parallel", "n_ctx"}`` caps for workers with these heartbeat
    statuses (``cpu_count``, ``gpu_count``, ``memory_total``, ``gpu_vram_total``), or None
    when none reported its resources."""
    known = [s for s in statuses if s.get("cpu_count")]
    if not known:
        return None

    def n(s, k):
        return int(s.get(k) or 0)

    return {
        "replica": sum(PROCESSES_PER_CORE * max(n(s, "cpu_count"), n(s, "gpu_count"), 1)
                       for s in known),
        "n_parallel": max(SLOTS_PER_CORE * n(s, "cpu_count")
                          + SLOTS_PER_GPU * n(s, "gpu_count") for s in known),
        "n_ctx": max((n(s, "memory_total") + n(s, "gpu_vram_total")) // KV_BYTES_PER_TOKEN
                     for s in known),
    }


def check_launch_caps(replica: int, options: Dict[str, Any],
                      statuses: Iterable[Dict[str, Any]]) -> None:
    """Refuse ``replica`` and the engine ``options`` ``n_parallel`` / ``n_ctx`` above
    :func:`launch_caps` (an option that is not a number is left to the engine's check).

    Raises:
        InvalidRequestError: (400) naming the option, its cap and where the cap comes
            from."""
    caps = launch_caps(statuses)
    if caps is None:
        return
    why = {"replica": f"{PROCESSES_PER_CORE} model processes per CPU core or GPU of the "
                      "workers",
           "n_parallel": f"{SLOTS_PER_CORE} per CPU core plus {SLOTS_PER_GPU} per GPU of "
                         "the largest worker",
           "n_ctx": f"the largest worker's memory at {KV_BYTES_PER_TOKEN // 1024} KiB of KV "
                    "cache per token"}
    values = {"replica": replica, "n_parallel": options.get("n_parallel"),
              "n_ctx": options.get("n_ctx")}
    for name, value in values.items():
        try:
            v = int(value)
        except (TypeError, ValueError):
            continue
        if v > caps[name]:
            raise InvalidRequestError(
                f"'{name}' is {v}, above this cluster's cap of {caps[name]} ({why[name]})")
