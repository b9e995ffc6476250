"""Model types: their family schemas, builtin registries and launch planners.

:func:`model_type_handlers` is the one table the supervisor consults; a new model type is
added here. Only pydantic schemas are imported: no engine library.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Type


@dataclass(frozen=True)
class ModelTypeHandler:
    """How the supervisor deals with one model type.

    ``plan(family, model_uid, **launch_kwargs) -> (loader, description)``;
    ``engines(family) -> {engine: [spec rows]}`` for ``GET /v1/engines/{model_name}`` (None:
    no engine runs this type here); every type builds it with
    :func:`~xinference.model.engine.engine_table` over its
    :class:`~xinference.model.engine.EngineSpec` table, and checks launch options with
    :func:`~xinference.model.engine.check_launch_options`.
    """

    schema: Type
    builtins: Callable[[], Dict[str, Any]]
    plan: Callable[..., Any]
    engines: Optional[Callable[[Any], Dict[str, List[Dict[str, Any]]]]] = None


@functools.lru_cache(maxsize=1)
def model_type_handlers() -> Dict[str, ModelTypeHandler]:
    from .embedding.launch import sentence_engines_for_family
    from .llm.engines import engines_for_family
    from .llm.launch import plan_llm_launch
    from .llm.llm_family import LLMFamily, builtin_llm_families
    from .embedding.family import EmbeddingModelFamily, builtin_embedding_families
    from .embedding.launch import plan_embedding_launch
    from .rerank.family import RerankModelFamily, builtin_rerank_families
    from .rerank.launch import plan_rerank_launch
    from .audio.family import AudioModelFamily, builtin_audio_families
    from .audio.launch import audio_engines_for_family, plan_audio_launch
    from .image.family import ImageModelFamily, builtin_image_families
    from .image.launch import image_engines_for_family, plan_image_launch
    from .video.family import VideoModelFamily, builtin_video_families
    from .video.launch import plan_video_launch, video_engines_for_family

    return {
        "LLM": ModelTypeHandler(LLMFamily, builtin_llm_families, plan_llm_launch,
                                engines_for_family),
        "embedding": ModelTypeHandler(EmbeddingModelFamily, builtin_embedding_families,
                                      plan_embedding_launch, sentence_engines_for_family),
        "rerank": ModelTypeHandler(RerankModelFamily, builtin_rerank_families,
                                   plan_rerank_launch, sentence_engines_for_family),
        "image": ModelTypeHandler(ImageModelFamily, builtin_image_families,
                                  plan_image_launch, image_engines_for_family),
        "audio": ModelTypeHandler(AudioModelFamily, builtin_audio_families,
                                  plan_audio_launch, audio_engines_for_family),
        "video": ModelTypeHandler(VideoModelFamily, builtin_video_families,
                                  plan_video_launch, video_engines_for_family),
    }
