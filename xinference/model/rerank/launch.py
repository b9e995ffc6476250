"""Launch planning for rerank models (supervisor side, no engine imports)."""

from __future__ import annotations

from ...errors import InvalidRequestError
from ..embedding.launch import plan_sentence_launch
from .family import RerankModelFamily


def plan_rerank_launch(family: RerankModelFamily, model_uid: str, **kwargs):
    """Build the loader of a rerank model (a cross-encoder on sentence-transformers, or an
    ``LLM-based`` one on Transformers or vLLM); returns ``(loader, description)``.

    Raises:
        InvalidRequestError: the family's ``type`` is ``LLM-based layerwise`` (no engine
        here runs it), or see
        :func:`~xinference.model.embedding.launch.plan_sentence_launch`.
    """
    if family.type == "LLM-based layerwise":
        raise InvalidRequestError(
            f"Rerank model {family.model_name!r} is of type {family.type!r}; 'normal' "
            "(cross-encoder) and 'LLM-based' rerank models can be launched here")
    loader, desc = plan_sentence_launch(family, model_uid, **kwargs)
    desc.update(type=family.type, max_tokens=family.max_tokens, model_ability=["rerank"])
    if family.type == "LLM-based":
        desc["llm_format"] = family.llm_format
    return loader, desc
