"""Turn an LLM launch request into a loader and a description (supervisor side)."""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ..engine import check_launch_options
from .engines import match_spec
from .llm_family import LLMFamily
from .loader import LLMLoader


def plan_llm_launch(family: LLMFamily, model_uid: str, *, model_engine: Optional[str] = None,
                    model_format: Optional[str] = None, model_size_in_billions: Any = None,
                    quantization: Optional[str] = None, model_path: Optional[str] = None,
                    **kwargs) -> Tuple[LLMLoader, Dict[str, Any]]:
    """Match the request to a spec and engine.

    Returns ``(loader, description)``; the description is what ``GET
    /v1/models/{model_uid}`` reports.

    Raises:
        InvalidRequestError: nothing matches (see :func:`match_spec`), or a bad value of
        an option in the engine's schema (``stream_interval``, ``n_parallel``,
        ``trust_remote_code`` ...), refused here before a process starts.
    """
    engine, spec, quant = match_spec(
        family, model_engine, model_format, model_size_in_billions, quantization
    )
    kwargs = check_launch_options(engine, kwargs, family.model_name)
    loader = LLMLoader(model_uid, family, spec, quant, engine.name, model_path, kwargs)
    desc = {
        "model_type": "LLM",
        "model_name": family.model_name,
        "model_engine": engine.name,
        "model_format": spec.model_format,
        "model_size_in_billions": spec.model_size_in_billions,
        "quantization": quant,
        "model_ability": list(family.model_ability),
        "model_lang": list(family.model_lang),
        # A launch-time n_ctx (llama.cpp) is the running model's real context.
        "context_length": int(kwargs.get("n_ctx") or family.context_length),
        "model_description": family.model_description,
    }
    return loader, desc
