"""Schema of audio model families (speech-to-text, text-to-speech) and the builtin registry.

Pure pydantic: the supervisor imports this module; no engine library is imported here.

A family is written as Xinference writes audio models (flat, one source per family)::

    {"version": 2, "model_name": "whisper-tiny.en", "model_family": "whisper",
     "model_ability": ["audio2text"], "multilingual": false,
     "model_id": "Systran/faster-whisper-tiny.en"}

    {"model_name": "my-voice", "model_family": "piper", "model_ability": ["text2audio"],
     "model_uri": "file:///voices/en_US-joe-medium", "voices": ["joe"]}

``model_family`` picks the engine: ``whisper`` runs on faster-whisper (CTranslate2 format,
as the ``Systran/faster-whisper-*`` repositories hold it), ``piper`` on piper-tts (an
``.onnx`` voice with its ``.onnx.json`` config). Extensions of ours: ``package`` /
``package_subdir`` (an installed Python package whose directory holds the weights, for
air-gapped installs) and ``model_file`` (the voice file inside the hub repository or the
directory, for Piper, whose hub repository holds every voice).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple

from pydantic import model_validator

from ..custom_family import CustomFamilyBase

#: model_family -> the abilities a family of it has when it names none
DEFAULT_ABILITIES = {"whisper": ["audio2text"], "piper": ["text2audio"]}


class AudioModelFamily(CustomFamilyBase):
    """An audio model: ``model_family`` ``whisper`` (``audio2text``) or ``piper``
    (``text2audio``); ``multilingual`` as in Xinference's whisper specs (an English-only
    Whisper model is ``false``); ``voices`` the speaker names a TTS voice answers to (the
    first is the default); ``language`` the languages a TTS voice speaks."""

    KNOWN_ABILITIES: ClassVar[Tuple[str, ...]] = (
        "audio2text", "text2audio", "audio2audio",
    )

    version: int = 2
    model_type: Literal["audio"] = "audio"
    model_family: Optional[str] = "whisper"
    model_ability: List[str] = []
    multilingual: bool = True
    language: Optional[List[str]] = None
    voices: Optional[List[str]] = None
    model_file: Optional[str] = None
    package: Optional[str] = None
    package_subdir: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _default_abilities(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("model_ability"):
            fam = str(data.get("model_family") or "whisper").lower()
            data = dict(data, model_ability=list(DEFAULT_ABILITIES.get(fam, ["audio2text"])))
        return data


def load_audio_families(path: Path) -> Dict[str, AudioModelFamily]:
    """Parse a builtin ``model_spec.json`` (a list of families) into ``{model_name: family}``."""
    import json

    data = json.loads(path.read_text(encoding="utf-8"))
    return {d["model_name"]: AudioModelFamily.model_validate(d, context={"builtin": True})
            for d in data}


@functools.lru_cache(maxsize=1)
def builtin_audio_families() -> Dict[str, AudioModelFamily]:
    """The families shipped in ``audio/model_spec.json``, by ``model_name``."""
    return load_audio_families(Path(__file__).with_name("model_spec.json"))
