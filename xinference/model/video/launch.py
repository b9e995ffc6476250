"""Launch planning for video models (supervisor side, no engine imports): the diffusers
video engine, planned by the image planner's shared :func:`~xinference.model.image.launch.
plan_media_launch`."""

from __future__ import annotations

from typing import Any, Dict

from ...errors import InvalidRequestError
from ..engine import EngineSpec
from ..image.launch import DIFFUSERS_IMAGE, media_engine_table, plan_media_launch
from .family import VideoModelFamily

#: the diffusers video engine: the image engine's options, and PyAV to encode the video
DIFFUSERS_VIDEO = EngineSpec(
    "diffusers", "xinference.model.video.diffusers_engine:DiffusersVideoModel", ("pytorch",),
    ("torch", "diffusers", "av"), options=DIFFUSERS_IMAGE.options)


def video_engines_for_family(family: VideoModelFamily) -> Dict[str, Any]:
    """``GET /v1/engines/{model_name}`` for a video family."""
    return media_engine_table(DIFFUSERS_VIDEO, family)


def plan_video_launch(family: VideoModelFamily, model_uid: str, **kwargs):
    """Build the loader of a text-to-video model (diffusers); returns ``(loader,
    description)``.

    Raises:
        InvalidRequestError: the family cannot make video from text, or see
        :func:`~xinference.model.image.launch.plan_media_launch`.
    """
    if "text2video" not in family.model_ability:
        raise InvalidRequestError(
            f"Video model {family.model_name!r} has abilities {family.model_ability}; only "
            "text-to-video models can be launched here")
    return plan_media_launch(DIFFUSERS_VIDEO, family, model_uid, **kwargs)
