"""Rerank family schema and the builtin rerank registry (pure pydantic).

The custom form of Xinference's documentation is accepted as written::

    {"model_name": "custom-bge-reranker-v2-m3", "type": "normal",
     "language": ["en", "zh", "multilingual"],
     "model_id": "BAAI/bge-reranker-v2-m3", "model_uri": "/path/to/bge-reranker-v2-m3"}

as is the ``model_specs`` form of :mod:`xinference.model.embedding.family`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict, Literal, Optional

from pydantic import Field

from ..embedding.family import SentenceModelFamily, load_builtin_families

RERANK_TYPES = ("normal", "LLM-based", "LLM-based layerwise")


class RerankModelFamily(SentenceModelFamily):
    """A rerank model. ``type`` ``"normal"`` is a cross-encoder (sequence classification
    with one label, sentence-transformers engine); ``"LLM-based"`` is a causal LM scored
    from its next-token logits at the end of a prompt (Transformers engine), in the prompt
    format ``llm_format`` names (:mod:`xinference.model.rerank.llm_formats`:
    ``"qwen3"`` for Qwen3-Reranker, ``"bge-llm"`` for bge-reranker-v2-gemma and
    FlagEmbedding's other LLM rerankers, the default as in upstream Xinference).
    ``"LLM-based layerwise"`` (bge-reranker-v2-minicpm-layerwise) is accepted in
    registrations but no engine here runs it. ``max_tokens`` bounds a (query, document)
    pair in tokens."""

    type: Literal["normal", "LLM-based", "LLM-based layerwise"] = "normal"
    llm_format: Literal["qwen3", "bge-llm"] = "bge-llm"
    max_tokens: Optional[int] = Field(None, gt=0)
    model_type: Literal["rerank"] = "rerank"


@functools.lru_cache(maxsize=1)
def builtin_rerank_families() -> Dict[str, RerankModelFamily]:
    """The families shipped in ``rerank/model_spec.json``, by ``model_name``."""
    return load_builtin_families(Path(__file__).with_name("model_spec.json"),
                                 RerankModelFamily)
