"""Schemas of image and video model families, as Xinference writes them, and the builtin
image registry.

Pure pydantic: the supervisor imports this module; no engine library is imported here.

A family (builtin in ``model_spec.json`` or registered as a custom model)::

    {"model_name": "sd-turbo", "model_family": "stable_diffusion",
     "model_id": "stabilityai/sd-turbo", "model_ability": ["text2image", "image2image",
     "inpainting"], "default_model_config": {"torch_dtype": "float16"},
     "default_generate_config": {"num_inference_steps": 1, "guidance_scale": 0.0}}

``model_uri`` (a local diffusers directory) may replace ``model_id``. Our extensions:
``package`` / ``package_subdir`` (weights inside an installed Python package, as the OCR
family uses), ``min_image_size`` / ``max_image_size`` (the sides, in pixels, a request may
ask for).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple

from pydantic import Field, model_validator

from ..custom_family import CustomFamilyBase


class DiffusionFamilyBase(CustomFamilyBase):
    """Fields image and video families share.

    ``default_model_config``: launch options applied unless the launch overrides them
    (``torch_dtype``, ``cpu_offload`` ...). ``default_generate_config``: per-request
    defaults (``num_inference_steps``, ``guidance_scale`` ...) a request may override.
    """

    default_model_config: Dict[str, Any] = Field(default_factory=dict)
    default_generate_config: Dict[str, Any] = Field(default_factory=dict)
    package: Optional[str] = None
    package_subdir: Optional[str] = None
    min_image_size: int = Field(64, ge=1)
    max_image_size: int = Field(2048, ge=1)

    @model_validator(mode="after")
    def _check_source(self) -> Any:  # also accepts ``package`` (overrides the base rule)
        if not (self.model_id or self.model_uri or self.package):
            raise ValueError("give model_uri (file:///abs/path) or model_id (a hub id)")
        if self.min_image_size > self.max_image_size:
            raise ValueError("min_image_size must not exceed max_image_size")
        return self


class ImageModelFamily(DiffusionFamilyBase):
    """An image model: a diffusers pipeline (``text2image``, ``image2image``,
    ``inpainting``) or an OCR model (``ocr``; ``model_family`` ``"ocr"``).
    ``controlnet`` lists optional ControlNet families (kept, not used yet)."""

    KNOWN_ABILITIES: ClassVar[Tuple[str, ...]] = (
        "text2image", "image2image", "inpainting", "ocr",
    )

    model_type: Literal["image"] = "image"
    model_family: Optional[str] = "stable_diffusion"
    model_ability: List[str] = ["text2image"]
    controlnet: Optional[List[dict]] = None

    @property
    def is_ocr(self) -> bool:
        """Served by the OCR engine (an ``ocr`` family or ability), not by diffusers."""
        return (self.model_family or "").lower() == "ocr" or "ocr" in self.model_ability

    @model_validator(mode="after")
    def _check_ocr(self) -> "ImageModelFamily":
        if self.is_ocr and set(self.model_ability) - {"ocr"}:
            raise ValueError("an OCR model has the single ability 'ocr'")
        return self


def load_families(path: Path, schema) -> Dict[str, Any]:
    """Parse a builtin ``model_spec.json`` (a list of families) into ``{model_name:
    family}``."""
    from ..embedding.family import load_builtin_families

    return load_builtin_families(path, schema)


@functools.lru_cache(maxsize=1)
def builtin_image_families() -> Dict[str, ImageModelFamily]:
    """The families shipped in ``image/model_spec.json``, by ``model_name``."""
    return load_families(Path(__file__).with_name("model_spec.json"), ImageModelFamily)
