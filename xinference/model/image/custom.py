"""Custom image models, as Xinference's "Custom Models" page writes them::

    {"model_name": "my-sd", "model_family": "stable_diffusion",
     "model_uri": "file:///path/to/sd", "model_ability": ["text2image"]}

A custom family has the builtin schema (:class:`~xinference.model.image.family.
ImageModelFamily`): it launches like a builtin one, from ``model_uri`` (a local diffusers
directory) or ``model_id``.
"""

from .family import ImageModelFamily as CustomImageModelFamily

__all__ = ["CustomImageModelFamily"]
