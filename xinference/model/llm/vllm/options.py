"""Launch options of the vLLM engine, checked where the launch is planned (no vLLM needed).

Names are vLLM's ``AsyncEngineArgs`` fields (docs.vllm.ai, "Engine Arguments"), as
upstream Xinference passes them through; ``cpu_kvcache_space`` is vLLM's
``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache on a CPU). Anything else a launch sends to this
engine is refused (400 naming it), so that an option is never accepted and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ....errors import InvalidRequestError
from ...options import flag, positive_int

#: options every LLM engine reads (the shared ``LLM`` base, the supervisor and worker)
SHARED_OPTIONS = frozenset({
    "stream_interval", "reasoning_content", "enable_thinking", "n_gpu",
    "enable_virtual_env", "virtual_env_packages",
})

#: what vLLM's ``dtype`` takes
DTYPES = ("auto", "float32", "float", "bfloat16", "float16", "half")


@dataclass
class VLLMOptions:
    """The vLLM options of one launch, validated (None: vLLM's default or ours, see
    :class:`~xinference.model.llm.vllm.core.VLLMModel`)."""

    gpu_memory_utilization: Optional[float] = None
    max_model_len: Optional[int] = None
    max_num_seqs: Optional[int] = None
    tensor_parallel_size: Optional[int] = None
    dtype: Optional[str] = None
    enforce_eager: Optional[bool] = None
    enable_prefix_caching: Optional[bool] = None
    enable_lora: bool = False
    lora_modules: Dict[str, str] = field(default_factory=dict)
    max_lora_rank: Optional[int] = None
    cpu_kvcache_space: Optional[int] = None
    trust_remote_code: bool = False


VLLM_OPTIONS = frozenset(VLLMOptions.__dataclass_fields__)


def _lora_modules(value: Any) -> Dict[str, str]:
    """``{name: path}``, a list of ``{"name", "path"}`` objects or of ``"name=path"`` texts
    (vLLM's ``--lora-modules`` spellings), or that as JSON text or ``"a=p1,b=p2"`` (from
    the command line) -> ``{name: path}``."""
    if value is None:
        return {}
    if isinstance(value, str):  # the CLI sends text: JSON, or "name=path,name=path"
        text = value.strip()
        try:
            value = json.loads(text) if text[:1] in "{[" else [
                part.strip() for part in text.split(",") if part.strip()]
        except ValueError:
            value = text
    items = []
    if isinstance(value, dict):
        items = list(value.items())
    elif isinstance(value, (list, tuple)):
        for entry in value:
            if isinstance(entry, dict) and set(entry) >= {"name", "path"}:
                items.append((entry["name"], entry["path"]))
            elif isinstance(entry, str) and "=" in entry:
                items.append(tuple(entry.split("=", 1)))
            else:
                items = None
                break
    else:
        items = None
    if items is None or not all(isinstance(n, str) and n and isinstance(p, str) and p
                                for n, p in items):
        raise InvalidRequestError(
            "'lora_modules' must map adapter names to paths: {\"name\": \"path\"}, "
            f"[{{\"name\": ..., \"path\": ...}}] or [\"name=path\"], got {value!r}")
    bad = [n for n, _ in items if ":" in n]
    if bad:
        raise InvalidRequestError(f"'lora_modules': adapter names may not contain ':' "
                                  f"(requests write '<model_uid>:<name>'), got {bad}")
    return dict(items)


def parse_options(kwargs: Dict[str, Any]) -> VLLMOptions:
    """Validate the launch kwargs an LLM with the vLLM engine gets.

    Raises:
        InvalidRequestError: an option vLLM's engine does not take here (named, with the
        list it takes), or a bad value (named).
    """
    unknown = sorted(k for k in kwargs if k not in VLLM_OPTIONS and k not in SHARED_OPTIONS
                     and kwargs[k] is not None)
    if unknown:
        raise InvalidRequestError(
            f"Unknown launch option(s) for the vLLM engine: {unknown}; it takes "
            f"{sorted(VLLM_OPTIONS)} (and {sorted(SHARED_OPTIONS)})")
    o = VLLMOptions()
    gmu = kwargs.get("gpu_memory_utilization")
    if gmu is not None:
        try:
            gmu_f = float(gmu)
        except (TypeError, ValueError):
            gmu_f = -1.0
        if isinstance(gmu, bool) or not 0 < gmu_f <= 1:
            raise InvalidRequestError(
                f"'gpu_memory_utilization' must be a number in (0, 1], got {gmu!r}")
        o.gpu_memory_utilization = gmu_f
    for name in ("max_model_len", "max_num_seqs", "tensor_parallel_size", "max_lora_rank",
                 "cpu_kvcache_space"):
        setattr(o, name, positive_int(name, kwargs.get(name)))
    dtype = kwargs.get("dtype")
    if dtype is not None:
        if not isinstance(dtype, str) or dtype.replace("torch.", "") not in DTYPES:
            raise InvalidRequestError(f"'dtype' must be one of {list(DTYPES)}, got {dtype!r}")
        o.dtype = dtype.replace("torch.", "")
    for name in ("enforce_eager", "enable_prefix_caching"):
        if kwargs.get(name) is not None:
            setattr(o, name, flag(name, kwargs[name]))
    o.trust_remote_code = flag("trust_remote_code", kwargs.get("trust_remote_code"), False)
    o.enable_lora = flag("enable_lora", kwargs.get("enable_lora"), False)
    o.lora_modules = _lora_modules(kwargs.get("lora_modules"))
    if o.lora_modules and kwargs.get("enable_lora") is not None and not o.enable_lora:
        raise InvalidRequestError("'lora_modules' needs enable_lora (it is false)")
    if o.enable_lora and not o.lora_modules:
        raise InvalidRequestError(
            "'enable_lora' needs 'lora_modules' (adapter name -> path): adapters are "
            "loaded at launch")
    o.enable_lora = bool(o.lora_modules)
    n_gpu = kwargs.get("n_gpu")
    if (o.tensor_parallel_size and isinstance(n_gpu, int) and not isinstance(n_gpu, bool)
            and n_gpu > 0 and n_gpu != o.tensor_parallel_size):
        raise InvalidRequestError(
            f"'tensor_parallel_size'={o.tensor_parallel_size} does not match n_gpu={n_gpu}:"
            " vLLM shards the model over the GPUs the model gets")
    return o
