"""Launch planning for image models (supervisor side, no engine imports).

:func:`plan_image_launch` picks the engine (diffusers, or rapidocr for an OCR family),
checks the launch options and returns a picklable :class:`MediaModelLoader` plus the
description ``GET /v1/models/{uid}`` shows. The loader's :meth:`~MediaModelLoader.load`
runs inside the model process. :func:`plan_media_launch` is shared with video
(:mod:`xinference.model.video.launch`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Tuple

from ..engine import (EngineSpec, OneSpec, any_option, bool_option, check_launch_options,
                      check_one_spec, choice_option, describe, engine_table, int_option,
                      require_engine)
from ..loader import ModelLoader
from .family import DiffusionFamilyBase, ImageModelFamily

#: launch options of the diffusers engines (see ``DiffusersEngine``)
DIFFUSERS_OPTIONS = {
    "n_gpu": any_option("'auto', or 0 for CPU only"),
    "device": any_option("'cpu', 'cuda' or 'auto' (default)"),
    "torch_dtype": choice_option("weights' dtype (default: by device)",
                                 ("float16", "bfloat16", "float32")),
    "cpu_offload": bool_option("keep idle submodels on the CPU"),
    "sequential_cpu_offload": bool_option("move each layer to the GPU only while it runs"),
    "torch_threads": int_option("torch CPU threads"),
}
DIFFUSERS_IMAGE = EngineSpec(
    "diffusers", "xinference.model.image.diffusers_engine:DiffusersImageModel", ("pytorch",),
    ("torch", "diffusers"), options=DIFFUSERS_OPTIONS)
RAPIDOCR = EngineSpec(
    "rapidocr", "xinference.model.image.ocr:RapidOCRModel", ("pytorch",),
    ("rapidocr_onnxruntime", "onnxruntime"),
    aliases=("rapidocr_onnxruntime", "rapidocr-onnxruntime"), options={
        "n_gpu": any_option("'auto', or 0 for CPU only"),
        "det_limit_side_len": int_option("longest image side the detector sees, pixels"),
        "det_limit_type": any_option("'max' or 'min': which side det_limit_side_len bounds"),
        "text_score": any_option("lowest recognition score kept, 0 to 1"),
        "num_threads": int_option("onnxruntime threads"),
    })


@dataclass
class MediaModelLoader(ModelLoader):
    """Launch parameters of one image or video replica (picklable)."""

    uses_torch: ClassVar[bool] = True

    def resolve_path(self) -> str:
        """Local directory of the weights: ``model_path``, ``model_uri``, the cache, the
        ``package``, or a download of ``model_id`` (all from the family)."""
        return self._resolve(self.family, "pytorch")


def image_engine(family: ImageModelFamily) -> EngineSpec:
    """The engine of an image family: rapidocr for an OCR family, else diffusers."""
    return RAPIDOCR if family.is_ocr else DIFFUSERS_IMAGE


def media_engine_table(engine: EngineSpec, family: DiffusionFamilyBase) -> Dict[str, Any]:
    """``GET /v1/engines/{model_name}`` for an image or video family: its one engine and
    spec (``pytorch``), :func:`~xinference.model.engine.engine_rows` with
    ``model_ability``."""
    return engine_table([engine], family, [OneSpec("pytorch")],
                        lambda e: {"model_ability": list(family.model_ability)})


def image_engines_for_family(family: ImageModelFamily) -> Dict[str, Any]:
    """``GET /v1/engines/{model_name}`` for an image family."""
    return media_engine_table(image_engine(family), family)


def plan_media_launch(engine: EngineSpec, family: DiffusionFamilyBase, model_uid: str, *,
                      model_engine: Optional[str] = None, model_format: Optional[str] = None,
                      quantization: Optional[str] = None, model_path: Optional[str] = None,
                      model_size_in_billions: Any = None,
                      **kwargs) -> Tuple[MediaModelLoader, Dict[str, Any]]:
    """Build the loader of an image or video model run by ``engine``; the options are the
    family's ``default_model_config`` overridden by the launch's. Returns ``(loader,
    description)``.

    Raises:
        InvalidRequestError: another engine, format or quantization than the family's,
        an unknown launch option or a bad value.
    """
    require_engine(engine, model_engine, family.model_name)
    check_one_spec(family.model_name, model_format, quantization, "pytorch")
    options = check_launch_options(engine, kwargs, family.model_name,
                                   defaults=family.default_model_config)
    loader = MediaModelLoader(model_uid, family, engine.class_path, model_path, options)
    desc = describe(family, engine, "pytorch", model_family=family.model_family,
                    model_id=family.model_id, model_ability=list(family.model_ability))
    return loader, desc


def plan_image_launch(family: ImageModelFamily, model_uid: str, **kwargs):
    """Build the loader of an image model (diffusers, or rapidocr for an OCR family);
    see :func:`plan_media_launch`."""
    return plan_media_launch(image_engine(family), family, model_uid, **kwargs)
