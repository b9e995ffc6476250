"""Schema of a custom image model, as Xinference's "Custom Models" page writes it::

    {"model_name": "my-sd", "model_family": "stable_diffusion",
     "model_uri": "file:///path/to/sd", "model_ability": ["text2image"]}

Registration, listing and unregistering work; launching answers 400 (no image engine here).
"""

from __future__ import annotations

from typing import ClassVar, List, Literal, Optional, Tuple

from ..custom_family import CustomFamilyBase


class CustomImageModelFamily(CustomFamilyBase):
    """A custom image model. ``controlnet`` lists optional ControlNet families."""

    KNOWN_ABILITIES: ClassVar[Tuple[str, ...]] = (
        "text2image", "image2image", "inpainting", "ocr",
    )

    model_type: Literal["image"] = "image"
    model_family: Optional[str] = "stable_diffusion"
    model_ability: List[str] = ["text2image"]
    controlnet: Optional[List[dict]] = None
