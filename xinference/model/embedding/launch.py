"""Launch planning for embedding and rerank models (supervisor side, no engine imports).

:func:`plan_embedding_launch` / :func:`plan_sentence_launch` turn a launch request into a
picklable :class:`SentenceModelLoader` plus the description ``GET /v1/models/{uid}`` shows.
The loader's :meth:`~SentenceModelLoader.load` runs inside the model process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError
from ..engine import (EngineSpec, any_option, bool_option, check_launch_options,
                      choice_option, describe, engine_table, int_option, pick_engine)
from ..llm.vllm.options import POOLING_OPTIONS, VLLM_EXCLUDES, VLLM_PACKAGES, validate_options
from ..loader import ModelLoader, spec_on_hub
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
_DTYPE = choice_option("weights' dtype (default float32 on the CPU, the checkpoint's own "
                       "on a GPU)", ("auto", "float32", "bfloat16", "float16"))
#: the Transformers engine of LLM-based embedding models (``pooling: "last_token"``)
TRANSFORMERS_EMBEDDING = dataclasses.replace(
    SENTENCE_RERANK, name="transformers", aliases=("Transformers",),
    class_path="xinference.model.embedding.llm_embedding:TransformersEmbedding",
    requires=("torch", "transformers"),
    options={**SENTENCE_RERANK.options, "torch_dtype": _DTYPE})
#: the Transformers engine of LLM-based rerank models (``type: "LLM-based"``)
TRANSFORMERS_RERANK = dataclasses.replace(
    TRANSFORMERS_EMBEDDING, class_path="xinference.model.rerank.llm_reranker:LLMRerank")
#: the vLLM engine of LLM-based embedding models (vLLM's pooling runner, last-token
#: pooling), in the same environment as the vLLM LLM engine (same packages: same key)
VLLM_EMBEDDING = EngineSpec(
    "vLLM", "xinference.model.embedding.vllm_embedding:VLLMEmbedding", ("pytorch",),
    ("vllm",), options=POOLING_OPTIONS, validate=validate_options,
    virtualenv_packages=VLLM_PACKAGES, virtualenv_excludes=VLLM_EXCLUDES)
#: the vLLM engine of LLM-based rerank models (the LM head's score tokens as a classifier)
VLLM_RERANK = dataclasses.replace(
    VLLM_EMBEDDING, class_path="xinference.model.rerank.vllm_rerank:VLLMRerank")


@dataclass
class SentenceModelLoader(ModelLoader):
    """Launch parameters of one embedding or rerank replica (picklable); ``spec`` is the
    spec the plan picked (its format and where its weights are)."""

    spec: SentenceModelSpec = field(kw_only=True)

    @property
    def uses_torch(self) -> bool:
        """Torch engines get ``OMP_WAIT_POLICY=PASSIVE``; vLLM sets up its CPU threads
        itself (as for the LLM engine)."""
        return self.engine_class not in (VLLM_EMBEDDING.class_path, VLLM_RERANK.class_path)

    def weights_source(self) -> SentenceModelSpec:
        """``spec``, or its sibling of the same format on ``download_hub`` (see
        :func:`~xinference.model.loader.spec_on_hub`)."""
        return spec_on_hub(self.family.model_specs, self.spec, self.download_hub)

    def resolve_path(self) -> str:
        """Local directory of the weights of :meth:`weights_source`."""
        spec = self.weights_source()
        return self._resolve(spec, spec.model_format)


def _engines(family: SentenceModelFamily) -> List[EngineSpec]:
    """The engines that run ``family``, the default first: Transformers, then vLLM, for
    LLM-based embedding (``pooling: "last_token"``) and rerank (``type: "LLM-based"``)
    models; sentence-transformers for the others."""
    if family.model_type == "embedding":
        return [TRANSFORMERS_EMBEDDING, VLLM_EMBEDDING] if family.pooling \
            else [SENTENCE_EMBEDDING]
    return [TRANSFORMERS_RERANK, VLLM_RERANK] if family.type == "LLM-based" \
        else [SENTENCE_RERANK]


def launchable_specs(family: SentenceModelFamily) -> List[SentenceModelSpec]:
    """The specs a launch picks from, one per format: the Hugging Face ones (a
    ``model_hub: "modelscope"`` spec only when a family has nothing else). The launch's
    hub (``download_hub`` / ``XINFERENCE_MODEL_SRC``) then swaps in the same format's
    spec on that hub when it downloads (:meth:`SentenceModelLoader.weights_source`)."""
    specs = [s for s in family.model_specs if s.model_hub != "modelscope"]
    return specs or list(family.model_specs)


def sentence_engines_for_family(family: SentenceModelFamily) -> Dict[str, Any]:
    """``GET /v1/engines/{model_name}`` for embedding and rerank families: the engines
    that run the family (sentence-transformers; or Transformers and vLLM) with a row per
    spec (:func:`~xinference.model.engine.engine_rows`; ``virtualenv``: the engine runs
    in an environment of its own)."""
    return engine_table(_engines(family), family, launchable_specs(family),
                        lambda e: {"virtualenv": bool(e.virtualenv_packages)})


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
        InvalidRequestError: an engine that does not run the family or cannot run here,
        a format or quantization no spec has, or an unknown launch option or bad value.
    """
    engine = pick_engine(_engines(family), model_engine, family.model_name)
    why = engine.available()
    if why:
        raise InvalidRequestError(f"Engine {engine.name} cannot run here: {why}")
    options = check_launch_options(engine, kwargs, family.model_name)
    specs = [s for s in launchable_specs(family)
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
    """:func:`plan_sentence_launch` for an embedding family (:data:`SENTENCE_EMBEDDING`, or
    for LLM-based ones :data:`TRANSFORMERS_EMBEDDING` or :data:`VLLM_EMBEDDING`)."""
    loader, desc = plan_sentence_launch(family, model_uid, **kwargs)
    desc.update(dimensions=family.dimensions, max_tokens=family.max_tokens,
                model_ability=["embed"], modalities=list(family.modalities))
    return loader, desc
