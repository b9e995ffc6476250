"""Custom audio registrations, as Xinference's "Custom Models" page writes them::

    {"model_name": "my-whisper", "model_family": "whisper", "multilingual": true,
     "model_uri": "file:///path/to/whisper", "model_ability": ["audio2text"]}

A custom audio model uses the same schema as the builtin ones
(:class:`~xinference.model.audio.family.AudioModelFamily`) and launches like them.
"""

from __future__ import annotations

from .family import AudioModelFamily

#: the schema of a custom audio model (the builtin schema; kept under its old name)
CustomAudioModelFamily = AudioModelFamily

__all__ = ["CustomAudioModelFamily"]
