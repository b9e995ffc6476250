"""Schema of video model families and the builtin video registry (pure pydantic).

Fields as :class:`~xinference.model.image.family.DiffusionFamilyBase` (``model_id`` /
``model_uri``, ``default_model_config``, ``default_generate_config`` ...); abilities
``text2video`` and ``image2video`` (the latter is registered but not served yet).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar, Dict, List, Literal, Optional, Tuple

from ..image.family import DiffusionFamilyBase, load_families


class VideoModelFamily(DiffusionFamilyBase):
    """A video model: a diffusers text-to-video pipeline (CogVideoX, Wan ...)."""

    KNOWN_ABILITIES: ClassVar[Tuple[str, ...]] = ("text2video", "image2video")

    model_type: Literal["video"] = "video"
    model_family: Optional[str] = None
    model_ability: List[str] = ["text2video"]


@functools.lru_cache(maxsize=1)
def builtin_video_families() -> Dict[str, VideoModelFamily]:
    """The families shipped in ``video/model_spec.json``, by ``model_name``."""
    return load_families(Path(__file__).with_name("model_spec.json"), VideoModelFamily)
