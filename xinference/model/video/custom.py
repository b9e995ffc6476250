"""Custom video models::

    {"model_name": "my-video", "model_family": "CogVideoX",
     "model_uri": "file:///path/to/model", "model_ability": ["text2video"]}

A custom family has the builtin schema (:class:`~xinference.model.video.family.
VideoModelFamily`) and launches like a builtin one.
"""

from .family import VideoModelFamily as CustomVideoModelFamily

__all__ = ["CustomVideoModelFamily"]
