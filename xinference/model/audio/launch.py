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
from ..engine import (EngineSpec, OneSpec, any_option, check_launch_options, check_one_spec,
                      describe, engine_table, int_option, require_engine)
from ..loader import ModelLoader
from .family import AudioModelFamily

_DEVICE = {"device": any_option("'cpu', 'cuda' or 'auto' (default)"),
           "n_gpu": any_option("'auto', or 0 for CPU only")}

#: model_family -> engine
ENGINES: Dict[str, EngineSpec] = {
    "whisper": EngineSpec(
        "faster-whisper", "xinference.model.audio.whisper:WhisperEngine", ("ctranslate2",),
        ("faster_whisper", "ctranslate2", "av"), aliases=("faster_whisper", "fasterwhisper"),
        options={**_DEVICE,
                 "compute_type": any_option("CTranslate2 compute type (int8, float16 ...)"),
                 "cpu_threads": int_option("CPU threads per transcription"),
                 "num_workers": int_option("transcriptions run in parallel"),
                 "batch_size": int_option("audio chunks decoded together")}),
    "piper": EngineSpec(
        "piper", "xinference.model.audio.piper:PiperEngine", ("onnx",),
        ("piper", "onnxruntime", "av"), aliases=("piper-tts", "piper_tts"), options=_DEVICE),
}


def engine_for(family: AudioModelFamily) -> EngineSpec:
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
    """``GET /v1/engines/{model_name}`` for an audio family (its one engine and spec,
    :func:`~xinference.model.engine.engine_rows` with ``model_ability``)."""
    engine = engine_for(family)
    return engine_table([engine], family, [OneSpec(engine.formats[0])],
                        lambda e: {"model_ability": list(family.model_ability)})


def plan_audio_launch(family: AudioModelFamily, model_uid: str, *,
                      model_engine: Optional[str] = None, model_format: Optional[str] = None,
                      quantization: Optional[str] = None, model_path: Optional[str] = None,
                      model_size_in_billions: Any = None,
                      **kwargs) -> Tuple[AudioModelLoader, Dict[str, Any]]:
    """Build the loader of ``family``; returns ``(loader, description)``.

    Raises:
        InvalidRequestError: an unknown family, another engine, format or quantization than
        the family's, or an unknown launch option or bad value.
    """
    engine = engine_for(family)
    fmt = engine.formats[0]
    require_engine(engine, model_engine, family.model_name)
    check_one_spec(family.model_name, model_format, quantization, fmt,
                   " (use compute_type for faster-whisper)"
                   if engine.name == "faster-whisper" else "")
    options = check_launch_options(engine, kwargs, family.model_name)
    loader = AudioModelLoader(model_uid, family, engine.class_path, model_path, options,
                              model_format=fmt)
    desc = describe(family, engine, fmt, model_family=family.model_family,
                    model_ability=list(family.model_ability), model_id=family.model_id,
                    multilingual=family.multilingual)
    if family.voices:
        desc["voices"] = list(family.voices)
    if family.language:
        desc["language"] = list(family.language)
    return loader, desc
