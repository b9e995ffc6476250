"""Resources of a node (CPU, memory, NVIDIA GPUs) and the GPU allocation rule of a worker.

Detection uses ``psutil`` for CPU and memory, and NVML (``pynvml``, when installed) or the
``nvidia-smi`` command for GPUs; a machine with neither has no GPU. Nothing here imports
an engine library: workers and the supervisor import this module at start-up.

GPU indexes are the driver's (``nvidia-smi``) indexes; a model process gets
``CUDA_VISIBLE_DEVICES`` with the indexes it was given and ``CUDA_DEVICE_ORDER=PCI_BUS_ID``
so CUDA numbers them the same way. When the worker itself runs with
``CUDA_VISIBLE_DEVICES=0,2``, only those GPUs are offered.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from typing import Any, Dict, List, Optional, Union

from ..errors import InvalidRequestError, ModelUnavailableError

logger = logging.getLogger(__name__)

_MIB = 1024 * 1024
_nvidia_smi_missing = False


def _visible_filter(gpus: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return gpus
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    if not all(v.isdigit() for v in wanted):  # UUIDs or MIG names: offer what is there
        return gpus
    keep = {int(v) for v in wanted}
    return [g for g in gpus if g["index"] in keep]


def _gpus_nvml() -> Optional[List[Dict[str, Any]]]:
    try:
        import pynvml
    except Exception:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:
        return None
    try:
        out = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h)
            name = pynvml.nvmlDeviceGetName(h)
            out.append({"index": i, "name": name.decode() if isinstance(name, bytes) else name,
                        "memory_total": int(mem.total), "memory_used": int(mem.used)})
        return out
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:
            pass


def _gpus_nvidia_smi() -> List[Dict[str, Any]]:
    global _nvidia_smi_missing
    if _nvidia_smi_missing:
        return []
    exe = shutil.which("nvidia-smi")
    if exe is None:
        _nvidia_smi_missing = True
        return []
    try:
        text = subprocess.run(
            [exe, "--query-gpu=index,name,memory.total,memory.used",
             "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
    except Exception as e:  # driver missing or broken: no GPU rather than no worker
        logger.warning("nvidia-smi failed (%s); reporting no GPU", e)
        return []
    return parse_nvidia_smi(text)


def parse_nvidia_smi(text: str) -> List[Dict[str, Any]]:
    """Rows of ``nvidia-smi --query-gpu=index,name,memory.total,memory.used
    --format=csv,noheader,nounits`` → ``[{"index", "name", "memory_total", "memory_used"}]``
    (memory in bytes). Lines that do not parse are skipped."""
    out = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 4:
            continue
        try:
            out.append({"index": int(parts[0]), "name": parts[1],
                        "memory_total": int(float(parts[2])) * _MIB,
                        "memory_used": int(float(parts[3])) * _MIB})
        except ValueError:
            continue
    return out


def gpu_info() -> List[Dict[str, Any]]:
    """The GPUs this process may use: ``[{"index", "name", "memory_total",
    "memory_used"}]`` (bytes), empty on a machine without an NVIDIA driver."""
    gpus = _gpus_nvml()
    if gpus is None:
        gpus = _gpus_nvidia_smi()
    return _visible_filter(gpus)


def node_resources() -> Dict[str, Any]:
    """``{"cpu_count", "cpu_utilization" (percent since the last call), "memory_total",
    "memory_available", "memory_used" (bytes), "gpus": [...], "gpu_count",
    "gpu_vram_total" (bytes)}`` of this machine."""
    import psutil

    vm = psutil.virtual_memory()
    gpus = gpu_info()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_utilization": psutil.cpu_percent(interval=None),
        "memory_total": vm.total,
        "memory_available": vm.available,
        "memory_used": vm.total - vm.available,
        "gpus": gpus,
        "gpu_count": len(gpus),
        "gpu_vram_total": sum(g["memory_total"] for g in gpus),
    }


NGpu = Union[int, str, None]


def normalize_n_gpu(n_gpu: Any) -> NGpu:
    """``"auto"`` | ``None`` (CPU) | an int >= 0; ``"2"`` → 2, ``"none"``/``0`` → CPU.

    Raises:
        InvalidRequestError: anything else.
    """
    if n_gpu is None or n_gpu == "auto":
        return n_gpu
    if isinstance(n_gpu, str):
        if n_gpu.lower() in ("none", "null", "cpu"):
            return None
        if n_gpu.isdigit():
            n_gpu = int(n_gpu)
    if isinstance(n_gpu, bool) or not isinstance(n_gpu, int) or n_gpu < 0:
        raise InvalidRequestError(
            f"'n_gpu' must be 'auto', a non-negative integer or null (CPU), got {n_gpu!r}"
        )
    return None if n_gpu == 0 else n_gpu


def normalize_gpu_idx(gpu_idx: Any) -> Optional[List[int]]:
    """``None`` | an int | a list of ints (each >= 0, no repeats) → a list or None.

    Raises:
        InvalidRequestError: anything else.
    """
    if gpu_idx is None:
        return None
    if isinstance(gpu_idx, int) and not isinstance(gpu_idx, bool):
        gpu_idx = [gpu_idx]
    if (not isinstance(gpu_idx, (list, tuple)) or not gpu_idx
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0
                       for i in gpu_idx)
            or len(set(gpu_idx)) != len(gpu_idx)):
        raise InvalidRequestError(
            f"'gpu_idx' must be a GPU index or a list of distinct indexes, got {gpu_idx!r}"
        )
    return list(gpu_idx)


def allocate_gpus(available: List[int], in_use: Dict[int, int], n_gpu: NGpu,
                  gpu_idx: Optional[List[int]]) -> Optional[List[int]]:
    """Which GPUs a new model process on a worker gets.

    Args:
        available: GPU indexes of the worker.
        in_use: ``{index: number of model processes using it}``.
        n_gpu: normalized ``n_gpu`` (see :func:`normalize_n_gpu`).
        gpu_idx: normalized explicit indexes; they may be shared with other models (the
            user chose them), but must exist on the worker.

    Returns:
        ``None``: no restriction (a worker without GPUs, CPU model); ``[]``: hide every
        GPU (a CPU model on a GPU worker); else the indexes for ``CUDA_VISIBLE_DEVICES``.
        ``"auto"`` takes one GPU, the least used, or runs on CPU on a worker without one.

    Raises:
        InvalidRequestError: the request can never be met on this worker (400).
        ModelUnavailableError: not enough free GPUs right now (503).
    """
    if gpu_idx is not None:
        missing = [i for i in gpu_idx if i not in available]
        if missing:
            raise InvalidRequestError(
                f"GPU index {missing} is not on this worker (its GPUs: {sorted(available)})"
            )
        if isinstance(n_gpu, int) and n_gpu != len(gpu_idx):
            raise InvalidRequestError(
                f"n_gpu={n_gpu} does not match gpu_idx={gpu_idx} ({len(gpu_idx)} GPUs)"
            )
        return list(gpu_idx)
    if n_gpu is None:
        return [] if available else None
    if n_gpu == "auto":
        if not available:
            return None
        return [min(available, key=lambda i: (in_use.get(i, 0), i))]
    if len(available) < n_gpu:
        raise InvalidRequestError(
            f"n_gpu={n_gpu} asks for more GPUs than the worker has ({len(available)})"
        )
    free = [i for i in sorted(available) if not in_use.get(i, 0)]
    if len(free) < n_gpu:
        busy = sorted(i for i in available if in_use.get(i, 0))
        raise ModelUnavailableError(
            f"n_gpu={n_gpu} asks for {n_gpu} free GPU(s) but only {len(free)} are free "
            f"(GPUs {busy} are used by other models)"
        )
    return free[:n_gpu]


def gpu_env(gpus: Optional[List[int]]) -> Dict[str, str]:
    """Environment of a model process given :func:`allocate_gpus`' answer."""
    if gpus is None:
        return {}
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in gpus),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}


def memory_fit_error(need: int, status: Dict[str, Any], gpus: Optional[List[int]]
                     ) -> Optional[str]:
    """Why a model that needs ``need`` bytes does not fit a worker, or None when it fits.

    Args:
        need: the estimate (``MemoryEstimate.total``).
        status: the worker's last status (``gpus`` with ``memory_total`` /
            ``memory_used``; ``memory_available`` of the host).
        gpus: what :func:`allocate_gpus` gave the launch: GPU indexes (the model is split
            over them), or ``None`` / ``[]`` for a CPU load (host memory counts).
    """
    gib = lambda b: f"{b / 2 ** 30:.2f} GiB"  # noqa: E731
    if gpus:
        by_index = {g["index"]: g for g in status.get("gpus") or []}
        free = sum(max(0, (by_index[i].get("memory_total") or 0)
                       - (by_index[i].get("memory_used") or 0))
                   for i in gpus if i in by_index)
        if need > free:
            return f"GPU {gpus} have {gib(free)} free"
        return None
    free = status.get("memory_available")
    if free is not None and need > free:
        return f"host memory has {gib(free)} available"
    return None
