"""Which engine runs which spec, and how a launch request picks one.

``llama.cpp`` runs ``ggufv2``; ``Transformers`` runs ``pytorch``. Availability is checked
with ``importlib.util.find_spec`` so that asking never imports torch or xllamacpp.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError
from .llm_family import LLMFamily, LLMSpec, normalize_size


def unavailable_reason(requires) -> Optional[str]:
    """``None`` when every module in ``requires`` can be imported here, else why not
    ("missing Python package(s): ..."); checked without importing them."""
    missing = [m for m in requires if importlib.util.find_spec(m) is None]
    if missing:
        return f"missing Python package(s): {', '.join(missing)}"
    return None


@dataclass(frozen=True)
class EngineInfo:
    """An engine: the formats it runs, the library it needs and its class path."""

    name: str
    formats: Tuple[str, ...]
    requires: Tuple[str, ...]
    class_path: str

    def available(self) -> Optional[str]:
        """``None`` when usable here, else why not (a missing library)."""
        return unavailable_reason(self.requires)

    def load_class(self):
        module, _, cls = self.class_path.partition(":")
        return getattr(importlib.import_module(module), cls)


LLM_ENGINES: Dict[str, EngineInfo] = {
    "llama.cpp": EngineInfo(
        "llama.cpp", ("ggufv2",), ("xllamacpp",),
        "xinference.model.llm.llama_cpp.core:LlamaCppModel",
    ),
    "Transformers": EngineInfo(
        "Transformers", ("pytorch",), ("torch", "transformers"),
        "xinference.model.llm.transformers.core:TransformersModel",
    ),
}


def find_engine(name: str) -> EngineInfo:
    """Engine by name, case-insensitive ("llama.cpp", "transformers").

    Raises:
        InvalidRequestError: unknown engine name.
    """
    for key, info in LLM_ENGINES.items():
        if key.lower() == name.lower():
            return info
    raise InvalidRequestError(
        f"Unknown model_engine {name!r}; engines: {list(LLM_ENGINES)}"
    )


def engines_for_family(family: LLMFamily) -> Dict[str, List[Dict[str, Any]]]:
    """``GET /v1/engines/{model_name}``: for each engine that can run some spec of the
    family, the specs it runs, with whether the engine's library is installed here."""
    out: Dict[str, List[Dict[str, Any]]] = {}
    for info in LLM_ENGINES.values():
        rows = [
            {
                "model_name": family.model_name,
                "model_format": s.model_format,
                "model_size_in_billions": s.model_size_in_billions,
                "quantizations": list(s.quantizations),
                "llm_class": info.class_path.rsplit(":", 1)[-1],
                "available": info.available() is None,
                "unavailable_reason": info.available(),
            }
            for s in family.model_specs
            if s.model_format in info.formats
        ]
        if rows:
            out[info.name] = rows
    return out


def match_spec(
    family: LLMFamily,
    model_engine: Optional[str] = None,
    model_format: Optional[str] = None,
    model_size_in_billions: Any = None,
    quantization: Optional[str] = None,
    download_hub: Optional[str] = None,
    preferred_hub: Optional[str] = None,
) -> Tuple[EngineInfo, LLMSpec, str]:
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
