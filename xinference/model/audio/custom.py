"""Schema of a custom audio model, as Xinference's "Custom Models" page writes it::

    {"model_name": "my-whisper", "model_family": "whisper", "multilingual": true,
     "model_uri": "file:///path/to/whisper", "model_ability": ["audio2text"]}

Registration, listing and unregistering work; launching answers 400 (no audio engine here).
"""

from __future__ import annotations

from typing import ClassVar, List, Literal, Optional, Tuple

from ..custom_family import CustomFamilyBase


class CustomAudioModelFamily(CustomFamilyBase):
    """A custom audio model; ``multilingual`` as in Xinference's whisper specs."""

    KNOWN_ABILITIES: ClassVar[Tuple[str, ...]] = (
        "audio2text", "text2audio", "audio2audio",
    )

    model_type: Literal["audio"] = "audio"
    model_family: Optional[str] = "whisper"
    model_ability: List[str] = ["audio2text"]
    multilingual: bool = True
