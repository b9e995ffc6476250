"""Launch planning for embedding and rerank models (supervisor side, no engine imports).

:func:`plan_embedding_launch` / :func:`plan_sentence_launch` turn a launch request into a
picklable :class:`SentenceModelLoader` plus the description ``GET /v1/models/{uid}`` shows.
The loader's :meth:`~SentenceModelLoader.load` runs inside the model process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple

from ...errors import InvalidRequestError
from ..engine import (EngineSpec, any_option, bool_option, check_launch_options, describe,
                      engine_table, int_option, require_engine)
from ..loader import ModelLoader
from .family import EmbeddingModelFamily, SentenceModelFamily, SentenceModelSpec

#: the sentence-transformers engine of rerank models (cross-encoders)
SENTENCE_RERANK = EngineSpec(
    "sentence_transformers", "xinference.model.rerank.cross_encoder:CrossEncoderRerank",
    ("pytorch",), ("torch", "sentence_transformers"),
    aliases=("sentence-transformers", "sentencetransformers"), options={
        "max_batch_size": int_option("requests batched into one forward pass"),
        "batch_wait_ms": any_option("how long a batch waits to fill, milliseconds"),
        "device": any_option("'cpu', 'cuda' or 'auto' (default)"),
        "n_gpu": any_option("'auto', or 0 for CPU only"),
        "trust_remote_code": bool_option("allow the model repository's own code"),
        "concurrent_batches": int_option("batches run at the same time"),
        "torch_threads": int_option("torch CPU threads"),
    })
#: the sentence-transformers engine of embedding models: the same options, and padding-free
SENTENCE_EMBEDDING = dataclasses.replace(
    SENTENCE_RERANK,
    class_path="xinference.model.embedding.sentence_transformers:SentenceTransformerEmbedding",
    options={**SENTENCE_RERANK.options,
             "padding_free": bool_option("pack sequences without padding")})


@dataclass
class SentenceModelLoader(ModelLoader):
    """Launch parameters of one embedding or rerank replica (picklable); ``spec`` is the
    spec the plan picked (its format and where its weights are)."""

    uses_torch: ClassVar[bool] = True

    spec: SentenceModelSpec = field(kw_only=True)

    def resolve_path(self) -> str:
        """Local directory of the weights of ``spec``."""
        return self._resolve(self.spec, self.spec.model_format)


def _engine(family: SentenceModelFamily) -> EngineSpec:
    return SENTENCE_EMBEDDING if family.model_type == "embedding" else SENTENCE_RERANK


def sentence_engines_for_family(family: SentenceModelFamily) -> Dict[str, Any]:
    """``GET /v1/engines/{model_name}`` for embedding and rerank families: the
    sentence-transformers engine with a row per spec
    (:func:`~xinference.model.engine.engine_rows`)."""
    return engine_table([_engine(family)], family, family.model_specs)


def plan_sentence_launch(family: SentenceModelFamily, model_uid: str, *,
                         model_engine: Optional[str] = None,
                         model_format: Optional[str] = None,
                         quantization: Optional[str] = None,
                         model_path: Optional[str] = None,
                         model_size_in_billions: Any = None,
                         **kwargs) -> Tuple[SentenceModelLoader, Dict[str, Any]]:
    """Pick the spec and build the loader of an embedding or rerank model; returns
    ``(loader, description)``.

    Raises:
        InvalidRequestError: an engine other than sentence-transformers, a format or
        quantization no spec has, or an unknown launch option or bad value.
    """
    engine = _engine(family)
    require_engine(engine, model_engine, family.model_name)
    options = check_launch_options(engine, kwargs, family.model_name)
    specs = [s for s in family.model_specs
             if (model_format is None or s.model_format == model_format)
             and (quantization in (None, "none") or quantization in s.quantizations)]
    if not specs:
        raise InvalidRequestError(
            f"No spec of {family.model_name!r} matches model_format={model_format!r}, "
            f"quantization={quantization!r}"
        )
    spec = specs[0]
    loader = SentenceModelLoader(model_uid, family, engine.class_path, model_path, options,
                                 spec=spec)
    desc = describe(family, engine, spec.model_format, model_id=spec.model_id,
                    language=list(family.language))
    return loader, desc


def plan_embedding_launch(family: EmbeddingModelFamily, model_uid: str, **kwargs):
    """:func:`plan_sentence_launch` for an embedding family (:data:`SENTENCE_EMBEDDING`)."""
    loader, desc = plan_sentence_launch(family, model_uid, **kwargs)
    desc.update(dimensions=family.dimensions, max_tokens=family.max_tokens,
                model_ability=["embed"])
    return loader, desc
