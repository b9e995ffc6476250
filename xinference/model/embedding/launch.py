"""Launch planning for embedding and rerank models (supervisor side, no engine imports).

:func:`plan_embedding_launch` / :func:`plan_sentence_launch` turn a launch request into a
picklable :class:`SentenceModelLoader` plus the description ``GET /v1/models/{uid}`` shows.
The loader's :meth:`~SentenceModelLoader.load` runs inside the model process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple

from ...errors import InvalidRequestError
from ..loader import ModelLoader
from ..options import flag, positive_int
from .family import EmbeddingModelFamily, SentenceModelFamily, SentenceModelSpec

ENGINE_NAME = "sentence_transformers"
_ENGINE_ALIASES = {"sentence_transformers", "sentence-transformers", "sentencetransformers"}

# Engine options a launch may carry (as ``--key value`` on the CLI); anything else is refused
# so that a typo does not pass silently.
ENGINE_OPTIONS = frozenset({"max_batch_size", "batch_wait_ms", "device", "n_gpu",
                            "trust_remote_code", "concurrent_batches", "torch_threads"})
# Options only the embedding engine takes.
EMBEDDING_OPTIONS = ENGINE_OPTIONS | {"padding_free"}


@dataclass
class SentenceModelLoader(ModelLoader):
    """Launch parameters of one embedding or rerank replica (picklable); ``spec`` is the
    spec the plan picked (its format and where its weights are)."""

    uses_torch: ClassVar[bool] = True

    spec: SentenceModelSpec = field(kw_only=True)

    def resolve_path(self) -> str:
        """Local directory of the weights of ``spec``."""
        return self._resolve(self.spec, self.spec.model_format)


def sentence_engines_for_family(family: SentenceModelFamily) -> Dict[str, Any]:
    """``GET /v1/engines/{model_name}`` for embedding and rerank families:
    ``{"sentence_transformers": [{model_name, model_format, quantizations, available ...}]}``;
    availability is checked without importing the library."""
    from ..llm.engines import unavailable_reason

    why = unavailable_reason(("torch", "sentence_transformers"))
    return {ENGINE_NAME: [
        {"model_name": family.model_name, "model_format": s.model_format,
         "model_size_in_billions": None, "quantizations": list(s.quantizations),
         "available": why is None, "unavailable_reason": why}
        for s in family.model_specs
    ]}


def _check_engine(model_engine: Optional[str]) -> None:
    if model_engine is not None and model_engine.lower() not in _ENGINE_ALIASES:
        raise InvalidRequestError(
            f"Model engine {model_engine!r} is not available for this model; "
            f"use {ENGINE_NAME!r}"
        )


def plan_sentence_launch(family: SentenceModelFamily, model_uid: str, engine_class: str, *,
                         model_engine: Optional[str] = None,
                         model_format: Optional[str] = None,
                         quantization: Optional[str] = None,
                         model_path: Optional[str] = None,
                         model_size_in_billions: Any = None,
                         engine_options: frozenset = ENGINE_OPTIONS,
                         **kwargs) -> Tuple[SentenceModelLoader, Dict[str, Any]]:
    """Pick the spec and build the loader; returns ``(loader, description)``.
    ``engine_options`` names the options the engine takes (others are refused).

    Raises:
        InvalidRequestError: an engine other than sentence-transformers, a format or
        quantization no spec has, or an unknown engine option.
    """
    _check_engine(model_engine)
    unknown = sorted(set(kwargs) - engine_options)
    if unknown:
        raise InvalidRequestError(
            f"Unknown launch option(s) {unknown} for {family.model_name!r}; "
            f"known: {sorted(engine_options)}"
        )
    for name in ("max_batch_size", "concurrent_batches", "torch_threads"):
        if name in kwargs:  # the engine gets the parsed value ("32.0" -> 32)
            kwargs[name] = positive_int(name, kwargs[name])
    for name in ("trust_remote_code", "padding_free"):
        if name in kwargs:
            kwargs[name] = flag(name, kwargs[name])
    specs = [s for s in family.model_specs
             if (model_format is None or s.model_format == model_format)
             and (quantization in (None, "none") or quantization in s.quantizations)]
    if not specs:
        raise InvalidRequestError(
            f"No spec of {family.model_name!r} matches model_format={model_format!r}, "
            f"quantization={quantization!r}"
        )
    spec = specs[0]
    loader = SentenceModelLoader(model_uid, family, engine_class, model_path, dict(kwargs),
                                 spec=spec)
    desc = {
        "model_type": family.model_type,
        "model_name": family.model_name,
        "model_engine": ENGINE_NAME,
        "model_format": spec.model_format,
        "model_id": spec.model_id,
        "language": list(family.language),
        "model_description": family.model_description,
    }
    return loader, desc


def plan_embedding_launch(family: EmbeddingModelFamily, model_uid: str, **kwargs):
    """:func:`plan_sentence_launch` for an embedding family (engine:
    ``xinference.model.embedding.sentence_transformers.SentenceTransformerEmbedding``)."""
    loader, desc = plan_sentence_launch(
        family, model_uid,
        "xinference.model.embedding.sentence_transformers:SentenceTransformerEmbedding",
        engine_options=EMBEDDING_OPTIONS, **kwargs,
    )
    desc.update(dimensions=family.dimensions, max_tokens=family.max_tokens,
                model_ability=["embed"])
    return loader, desc
