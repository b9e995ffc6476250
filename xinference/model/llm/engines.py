"""The LLM engines (:class:`~xinference.model.engine.EngineSpec` rows) and how a launch
request picks an engine and a spec.

``llama.cpp`` runs ``ggufv2``; ``Transformers`` runs ``pytorch``. Availability is checked
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


#: options every LLM engine takes (see ``LLM.__init__``)
_COMMON = {
    "stream_interval": int_option("tokens per streamed chunk (default 1)"),
    "reasoning_content": bool_option(
        "split reasoning into ``reasoning_content`` (default true)"),
    "trust_remote_code": bool_option("allow the model repository's own code"),
    "enable_thinking": bool_option("default of the chat template's enable_thinking"),
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
                        lambda e: {"llm_class": e.class_path.rsplit(":", 1)[-1]})


def match_spec(
    family: LLMFamily,
    model_engine: Optional[str] = None,
    model_format: Optional[str] = None,
    model_size_in_billions: Any = None,
    quantization: Optional[str] = None,
) -> Tuple[EngineSpec, LLMSpec, str]:
    """Pick ``(engine, spec, quantization)`` for a launch request; unset fields match
    anything, the first spec in the family's order wins. Quantization matches
    case-insensitively.

    Raises:
        InvalidRequestError: nothing matches; the message names what was asked and what the
        family offers, or the engine's library is missing.
    """
    size = normalize_size(model_size_in_billions)
    engine = find_engine(model_engine) if model_engine else None
    for spec in family.model_specs:
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
        ).items() if v
    }
    offered = [
        f"{s.model_format}/{s.model_size_in_billions}B/{','.join(s.quantizations)}"
        for s in family.model_specs
    ]
    raise InvalidRequestError(
        f"No spec of model {family.model_name!r} matches {asked}; it offers "
        f"(format/size/quantizations): {offered}"
    )
