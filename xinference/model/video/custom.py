"""Schema of a custom video model::

    {"model_name": "my-video", "model_family": "CogVideoX",
     "model_uri": "file:///path/to/model", "model_ability": ["text2video"]}

Registration, listing and unregistering work; launching answers 400 (no video engine here).
"""

from __future__ import annotations

from typing import ClassVar, List, Literal, Tuple

from ..custom_family import CustomFamilyBase


class CustomVideoModelFamily(CustomFamilyBase):
    """A custom video model."""

    KNOWN_ABILITIES: ClassVar[Tuple[str, ...]] = ("text2video", "image2video")

    model_type: Literal["video"] = "video"
    model_ability: List[str] = ["text2video"]
