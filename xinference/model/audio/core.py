"""Base of the audio engines (imported only inside model processes).

Every audio engine answers the three audio methods of the ModelActor
(``transcriptions``, ``translations``, ``speech``); what its abilities do not cover is
refused here with a 400 that names the model's abilities, so asking a Whisper model for
speech (or a voice for a transcript) never reaches an engine library.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ...errors import InvalidRequestError
from .family import AudioModelFamily

#: ModelActor method -> the ability it needs
METHOD_ABILITY = {"transcriptions": "audio2text", "translations": "audio2text",
                  "speech": "text2audio"}


class AudioModel:
    """An audio engine: ``model_uid``, its ``family`` and the local ``model_path``
    (a directory, or a file for single-file formats). Subclasses load in :meth:`load`."""

    def __init__(self, model_uid: str, family: AudioModelFamily, model_path: str):
        self._model_uid = model_uid
        self._family = family
        self._model_path = model_path

    @property
    def abilities(self) -> List[str]:
        """The family's ``model_ability`` (``audio2text``, ``text2audio`` ...)."""
        return list(self._family.model_ability)

    def load(self) -> None:  # pragma: no cover - every engine overrides it
        raise NotImplementedError

    def _refuse(self, method: str):
        need = METHOD_ABILITY[method]
        return InvalidRequestError(
            f"Model {self._model_uid!r} cannot serve {method}: it needs the {need!r} "
            f"ability, and this model's abilities are {self.abilities}"
        )

    @staticmethod
    def _check_extra(kwargs: Dict[str, Any], allowed: Optional[set] = None) -> Dict[str, Any]:
        """``kwargs`` when every key is in ``allowed``.

        Raises:
            InvalidRequestError: naming the unknown options and the known ones.
        """
        unknown = sorted(set(kwargs) - set(allowed or ()))
        if unknown:
            raise InvalidRequestError(
                f"Unknown option(s) {unknown}; this model takes {sorted(allowed or ())}")
        return kwargs

    async def transcriptions(self, audio: bytes, **kwargs) -> Any:
        """Speech to text; refused unless the engine overrides it."""
        raise self._refuse("transcriptions")

    async def translations(self, audio: bytes, **kwargs) -> Any:
        """Speech to English text; refused unless the engine overrides it."""
        raise self._refuse("translations")

    async def speech(self, input: str, **kwargs) -> Any:
        """Text to speech; refused unless the engine overrides it."""
        raise self._refuse("speech")
