"""Launch planning for audio models (supervisor side, no engine imports).

``model_family`` picks the engine: ``whisper`` -> faster-whisper
(:class:`~xinference.model.audio.whisper.WhisperEngine`), ``piper`` -> piper-tts
(:class:`~xinference.model.audio.piper.PiperEngine`). :func:`plan_audio_launch` turns a
launch request into a picklable :class:`AudioModelLoader` plus the description
``GET /v1/models/{uid}`` shows; the loader's :meth:`~AudioModelLoader.load` runs inside the
model process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from ...errors import InvalidRequestError
from ..loader import ModelLoader
from ..options import positive_int
from .family import AudioModelFamily


@dataclass(frozen=True)
class AudioEngineInfo:
    """One audio engine: its name (as ``model_engine`` and ``GET /v1/engines`` spell it),
    accepted aliases, ``module:Class``, the modules it needs (checked without importing),
    the weight format it runs and the launch options it takes."""

    name: str
    aliases: Tuple[str, ...]
    engine_class: str
    requires: Tuple[str, ...]
    model_format: str
    options: frozenset


#: model_family -> engine
ENGINES: Dict[str, AudioEngineInfo] = {
    "whisper": AudioEngineInfo(
        "faster-whisper", ("faster-whisper", "faster_whisper", "fasterwhisper"),
        "xinference.model.audio.whisper:WhisperEngine", ("faster_whisper", "ctranslate2", "av"),
        "ctranslate2",
        frozenset({"device", "n_gpu", "compute_type", "cpu_threads", "num_workers",
                   "batch_size"})),
    "piper": AudioEngineInfo(
        "piper", ("piper", "piper-tts", "piper_tts"),
        "xinference.model.audio.piper:PiperEngine", ("piper", "onnxruntime", "av"),
        "onnx", frozenset({"device", "n_gpu"})),
}


def engine_for(family: AudioModelFamily) -> AudioEngineInfo:
    """The engine of ``family`` (by ``model_family``).

    Raises:
        InvalidRequestError: no engine runs that model family here.
    """
    info = ENGINES.get(str(family.model_family or "").lower())
    if info is None:
        raise InvalidRequestError(
            f"No engine runs audio model family {family.model_family!r} "
            f"({family.model_name!r}); known families: {sorted(ENGINES)}")
    return info


@dataclass
class AudioModelLoader(ModelLoader):
    """Launch parameters of one audio replica (picklable); ``model_format`` is the weight
    format the engine runs (``ctranslate2``, ``onnx``)."""

    model_format: str = field(kw_only=True)

    def resolve_path(self) -> str:
        """Local path of the weights: a directory (Whisper), or the voice's ``.onnx`` file
        with its ``.onnx.json`` beside it (Piper with ``model_file``; the config is fetched
        from the hub too when only the voice is local)."""
        name = self.family.model_file or None
        path = self._resolve(self.family, self.model_format, file_name=name)
        if name and path.endswith(".onnx") and not _exists(path + ".json"):
            self._resolve(self.family, self.model_format, file_name=name + ".json")
        return path


def _exists(path: str) -> bool:
    import os

    return os.path.isfile(path)


def audio_engines_for_family(family: AudioModelFamily) -> Dict[str, Any]:
    """``GET /v1/engines/{model_name}`` for an audio family: ``{engine: [{model_name,
    model_format, model_ability, available, unavailable_reason}]}``; availability is
    checked without importing the engine."""
    from ..llm.engines import unavailable_reason

    info = engine_for(family)
    why = unavailable_reason(info.requires)
    return {info.name: [{"model_name": family.model_name, "model_format": info.model_format,
                         "model_size_in_billions": None, "quantizations": ["none"],
                         "model_ability": list(family.model_ability),
                         "available": why is None, "unavailable_reason": why}]}


def plan_audio_launch(family: AudioModelFamily, model_uid: str, *,
                      model_engine: Optional[str] = None, model_format: Optional[str] = None,
                      quantization: Optional[str] = None, model_path: Optional[str] = None,
                      model_size_in_billions: Any = None,
                      **kwargs) -> Tuple[AudioModelLoader, Dict[str, Any]]:
    """Build the loader of ``family``; returns ``(loader, description)``.

    Raises:
        InvalidRequestError: an unknown family, another engine, format or quantization than
        the family's, or an unknown launch option.
    """
    info = engine_for(family)
    if model_engine is not None and model_engine.lower() not in info.aliases:
        raise InvalidRequestError(
            f"Model engine {model_engine!r} is not available for {family.model_name!r}; "
            f"use {info.name!r}")
    if model_format not in (None, info.model_format):
        raise InvalidRequestError(
            f"{family.model_name!r} runs format {info.model_format!r}, not {model_format!r}")
    if quantization not in (None, "none"):
        raise InvalidRequestError(
            f"{family.model_name!r} has no quantization {quantization!r} (use compute_type "
            "for faster-whisper)" if info.name == "faster-whisper" else
            f"{family.model_name!r} has no quantization {quantization!r}")
    unknown = sorted(set(kwargs) - info.options)
    if unknown:
        raise InvalidRequestError(
            f"Unknown launch option(s) {unknown} for {family.model_name!r}; "
            f"known: {sorted(info.options)}")
    for name in ("cpu_threads", "num_workers", "batch_size"):
        if name in kwargs:
            kwargs[name] = positive_int(name, kwargs[name])
    loader = AudioModelLoader(model_uid, family, info.engine_class, model_path, dict(kwargs),
                              model_format=info.model_format)
    desc = {
        "model_type": "audio",
        "model_name": family.model_name,
        "model_engine": info.name,
        "model_format": info.model_format,
        "model_family": family.model_family,
        "model_ability": list(family.model_ability),
        "model_id": family.model_id,
        "multilingual": family.multilingual,
        "model_description": family.model_description,
    }
    if family.voices:
        desc["voices"] = list(family.voices)
    if family.language:
        desc["language"] = list(family.language)
    return loader, desc
