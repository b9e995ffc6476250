"""Launch planning for image and video models (supervisor side, no engine imports).

:func:`plan_image_launch` / :func:`plan_video_launch` pick the engine (diffusers, or
rapidocr for an OCR family), check the launch options and return a picklable
:class:`MediaModelLoader` plus the description ``GET /v1/models/{uid}`` shows. The loader's
:meth:`~MediaModelLoader.load` runs inside the model process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

from ...errors import InvalidRequestError
from ..loader import ModelLoader
from ..options import flag, positive_int
from .family import DiffusionFamilyBase, ImageModelFamily


@dataclass(frozen=True)
class MediaEngine:
    """An engine of image/video models: its name, the modules it needs, its class path and
    the launch options it takes."""

    name: str
    requires: Tuple[str, ...]
    class_path: str
    options: frozenset
    aliases: Tuple[str, ...] = ()


#: launch options of the diffusers engines (see ``DiffusersEngine``)
DIFFUSERS_OPTIONS = frozenset({"n_gpu", "device", "torch_dtype", "cpu_offload",
                               "sequential_cpu_offload", "torch_threads"})
DIFFUSERS_IMAGE = MediaEngine(
    "diffusers", ("torch", "diffusers"),
    "xinference.model.image.diffusers_engine:DiffusersImageModel", DIFFUSERS_OPTIONS)
DIFFUSERS_VIDEO = MediaEngine(
    "diffusers", ("torch", "diffusers", "av"),
    "xinference.model.video.diffusers_engine:DiffusersVideoModel", DIFFUSERS_OPTIONS)
RAPIDOCR = MediaEngine(
    "rapidocr", ("rapidocr_onnxruntime", "onnxruntime"),
    "xinference.model.image.ocr:RapidOCRModel",
    frozenset({"n_gpu", "det_limit_side_len", "det_limit_type", "text_score",
               "num_threads"}), aliases=("rapidocr_onnxruntime", "rapidocr-onnxruntime"))


@dataclass
class MediaModelLoader(ModelLoader):
    """Launch parameters of one image or video replica (picklable)."""

    uses_torch: ClassVar[bool] = True

    def resolve_path(self) -> str:
        """Local directory of the weights: ``model_path``, ``model_uri``, the cache, the
        ``package``, or a download of ``model_id`` (all from the family)."""
        return self._resolve(self.family, "pytorch")


def _engine_of(family: DiffusionFamilyBase, video: bool) -> MediaEngine:
    if video:
        return DIFFUSERS_VIDEO
    return RAPIDOCR if isinstance(family, ImageModelFamily) and family.is_ocr \
        else DIFFUSERS_IMAGE


def media_engines_for_family(family: DiffusionFamilyBase) -> Dict[str, Any]:
    """``GET /v1/engines/{model_name}`` for image and video families: ``{engine: [{
    model_name, model_format, quantizations, available, unavailable_reason}]}``;
    availability is checked without importing the engine's library."""
    from ..llm.engines import unavailable_reason

    engine = _engine_of(family, family.model_type == "video")
    why = unavailable_reason(engine.requires)
    return {engine.name: [{
        "model_name": family.model_name, "model_format": "pytorch",
        "model_size_in_billions": None, "quantizations": ["none"],
        "model_ability": list(family.model_ability), "available": why is None,
        "unavailable_reason": why,
    }]}


_BOOL_OPTIONS = ("cpu_offload", "sequential_cpu_offload")
_INT_OPTIONS = ("torch_threads", "num_threads", "det_limit_side_len")


def _plan(family: DiffusionFamilyBase, model_uid: str, video: bool, *,
          model_engine: Optional[str] = None, model_format: Optional[str] = None,
          quantization: Optional[str] = None, model_path: Optional[str] = None,
          model_size_in_billions: Any = None, **kwargs):
    engine = _engine_of(family, video)
    if model_engine is not None and model_engine.lower() not in (engine.name,) + engine.aliases:
        raise InvalidRequestError(
            f"Model engine {model_engine!r} is not available for {family.model_name!r}; "
            f"use {engine.name!r}")
    if model_format not in (None, "pytorch") or quantization not in (None, "none"):
        raise InvalidRequestError(
            f"{family.model_name!r} has one spec: model_format 'pytorch', quantization "
            f"'none' (got {model_format!r}, {quantization!r})")
    options = {k: v for k, v in family.default_model_config.items() if k in engine.options}
    unknown = sorted(set(kwargs) - engine.options)
    if unknown:
        raise InvalidRequestError(
            f"Unknown launch option(s) {unknown} for {family.model_name!r}; "
            f"known: {sorted(engine.options)}")
    options.update(kwargs)
    for name in _BOOL_OPTIONS:
        if name in options:
            options[name] = flag(name, options[name])
    for name in _INT_OPTIONS:
        if name in options:
            options[name] = positive_int(name, options[name])
    if options.get("torch_dtype") not in (None, "float16", "bfloat16", "float32"):
        raise InvalidRequestError(
            f"'torch_dtype' must be float16, bfloat16 or float32, got "
            f"{options['torch_dtype']!r}")
    loader = MediaModelLoader(model_uid, family, engine.class_path, model_path, options)
    desc = {
        "model_type": family.model_type,
        "model_name": family.model_name,
        "model_family": family.model_family,
        "model_engine": engine.name,
        "model_format": "pytorch",
        "model_id": family.model_id,
        "model_ability": list(family.model_ability),
        "model_description": family.model_description,
    }
    return loader, desc


def plan_image_launch(family: ImageModelFamily, model_uid: str, **kwargs):
    """Build the loader of an image model (diffusers, or rapidocr for an OCR family);
    returns ``(loader, description)``.

    Raises:
        InvalidRequestError: another engine, format or quantization than the family's,
        an unknown launch option or a bad value.
    """
    return _plan(family, model_uid, False, **kwargs)


def plan_video_launch(family, model_uid: str, **kwargs):
    """Build the loader of a video model (diffusers); see :func:`plan_image_launch`."""
    if "text2video" not in family.model_ability:
        raise InvalidRequestError(
            f"Video model {family.model_name!r} has abilities {family.model_ability}; only "
            "text-to-video models can be launched here")
    return _plan(family, model_uid, True, **kwargs)
