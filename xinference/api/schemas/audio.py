"""Request bodies of the audio routes (OpenAI Audio API): multipart forms for
``/v1/audio/transcriptions`` and ``/v1/audio/translations``, JSON for ``/v1/audio/speech``.

Values are checked for type here (422); what depends on the model (formats, languages,
voices, speed range) is checked by the engine (400). ``kwargs`` is Xinference's extra
field: engine options as a JSON object, or a JSON string in a form.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional

from pydantic import BaseModel, ConfigDict, field_validator

#: environment variable: the largest audio upload in MB (decimal) the gateway reads
XINFERENCE_ENV_AUDIO_MAX_UPLOAD_MB = "XINFERENCE_AUDIO_MAX_UPLOAD_MB"
#: default upload limit in MB (OpenAI's: 25 MB)
DEFAULT_AUDIO_MAX_UPLOAD_MB = 25.0


def max_upload_bytes() -> int:
    """The upload limit in bytes: ``$XINFERENCE_AUDIO_MAX_UPLOAD_MB`` (default 25) MB."""
    raw = os.environ.get(XINFERENCE_ENV_AUDIO_MAX_UPLOAD_MB)
    mb = float(raw) if raw else DEFAULT_AUDIO_MAX_UPLOAD_MB
    return int(mb * 1_000_000)


def _json_object(v: Any) -> Optional[Dict[str, Any]]:
    if v is None or v == "":
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            raise ValueError("kwargs must be a JSON object") from None
    if not isinstance(v, dict):
        raise ValueError("kwargs must be a JSON object")
    return v


class _Kwargs(BaseModel):
    """``kwargs``: engine options as a JSON object (or its JSON text)."""

    kwargs: Optional[Dict[str, Any]] = None

    @field_validator("kwargs", mode="before")
    @classmethod
    def _parse_kwargs(cls, v: Any) -> Optional[Dict[str, Any]]:
        return _json_object(v)


class _AudioForm(_Kwargs):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str
    prompt: Optional[str] = None
    response_format: str = "json"
    temperature: Optional[float] = None

    def config(self) -> Dict[str, Any]:
        """What the engine gets besides the audio (unset fields left out)."""
        return self.model_dump(exclude_none=True, exclude={"model"})


class TranscriptionForm(_AudioForm):
    """``POST /v1/audio/transcriptions`` (multipart, besides ``file``); the form field
    ``timestamp_granularities[]`` (repeated) becomes ``timestamp_granularities``."""

    language: Optional[str] = None
    timestamp_granularities: Optional[List[str]] = None


class TranslationForm(_AudioForm):
    """``POST /v1/audio/translations`` (multipart, besides ``file``)."""


class CreateSpeechRequest(_Kwargs):
    """``POST /v1/audio/speech``. ``stream`` is Xinference's (audio sent sentence by
    sentence); ``stream_format`` only ``audio`` (raw bytes); other fields go to the engine,
    which refuses what it does not take (``instructions`` for Piper, say)."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    input: str
    voice: Optional[str] = None
    response_format: str = "mp3"
    speed: float = 1.0
    stream: bool = False
    stream_format: Optional[str] = None

    def config(self) -> Dict[str, Any]:
        """Everything but ``model``, ``input`` and ``stream_format``; ``kwargs`` merged in."""
        out = self.model_dump(exclude_none=True,
                              exclude={"model", "input", "stream_format", "kwargs"})
        out.update(self.kwargs or {})
        return out
