"""Text-to-speech on piper-tts (VITS voices in ONNX, espeak-ng phonemes bundled with the
wheel): ``speech`` as OpenAI's Audio API defines it. Imported only inside model processes.

``speech`` is a plain method: the ModelActor runs requests one at a time in its engine
thread (onnxruntime uses the cores for one sentence), and a streamed answer is produced
sentence by sentence into the ModelActor's stream buffer.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator, List, Optional

from ...errors import InvalidRequestError
from .core import AudioModel
from .formats import MAX_SPEECH_INPUT, SPEECH_CONTENT_TYPES, SPEED_RANGE, check_choice

logger = logging.getLogger(__name__)


def voice_files(path: str) -> "tuple[Path, Path]":
    """``(voice.onnx, voice.onnx.json)`` for a resolved model path: the ``.onnx`` file
    itself, or a directory holding exactly one ``.onnx`` voice.

    Raises:
        InvalidRequestError: no voice, several voices, or the config is missing.
    """
    p = Path(path)
    if p.is_dir():
        found = sorted(p.glob("*.onnx"))
        if len(found) != 1:
            raise InvalidRequestError(
                f"{p} must hold exactly one Piper voice (.onnx), found "
                f"{[f.name for f in found]}; give model_file to choose one")
        p = found[0]
    config = p.with_name(p.name + ".json")
    if not config.is_file():
        raise InvalidRequestError(f"The Piper voice {p} has no config {config.name}")
    return p, config


class PiperEngine(AudioModel):
    """A Piper voice. Launch options: ``device`` (``cpu`` / ``cuda``) and ``n_gpu``
    (``0``: CPU; a GPU is used when onnxruntime has CUDA and one is visible)."""

    def __init__(self, model_uid, family, model_path, device: Optional[str] = None,
                 n_gpu: Any = None):
        super().__init__(model_uid, family, model_path)
        self._device = device
        self._n_gpu = n_gpu
        self._voice = None
        self._voices: List[str] = []
        self._speakers: dict = {}

    def _use_cuda(self) -> bool:
        if self._device:
            return str(self._device).startswith("cuda")
        if self._n_gpu in (0, "0"):
            return False
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()

    def load(self) -> None:
        """Load the ONNX voice and its config; work out the voice names it answers to.

        Raises:
            InvalidRequestError: see :func:`voice_files`.
        """
        from piper import PiperVoice

        onnx, config = voice_files(self._model_path)
        self._voice = PiperVoice.load(onnx, config_path=config, use_cuda=self._use_cuda())
        # Multi-speaker voices name their speakers; a one-speaker voice answers to the
        # family's voices (or its file's speaker name, "en_US-joe-medium" -> "joe").
        cfg = json.loads(config.read_text(encoding="utf-8"))
        self._speakers = dict(cfg.get("speaker_id_map") or {})
        names = list(self._family.voices or [])
        if self._speakers:
            names += [s for s in self._speakers if s not in names]
        elif not names:
            parts = onnx.stem.split("-")
            names = [parts[1] if len(parts) == 3 else onnx.stem]
        self._voices = names

    @property
    def voices(self) -> List[str]:
        """The names ``voice`` may take (the first is the default)."""
        return list(self._voices)

    @property
    def sample_rate(self) -> int:
        """Hz of the voice's output (22,050 for ``medium`` voices)."""
        return int(self._voice.config.sample_rate)

    def _synthesis_config(self, voice: Optional[str], speed: Any):
        from piper import SynthesisConfig

        if isinstance(speed, bool) or not isinstance(speed, (int, float)) \
                or not SPEED_RANGE[0] <= speed <= SPEED_RANGE[1]:
            raise InvalidRequestError(
                f"'speed' must be a number from {SPEED_RANGE[0]} to {SPEED_RANGE[1]}, "
                f"got {speed!r}")
        voice = voice or self._voices[0]
        if voice not in self._voices:
            raise InvalidRequestError(
                f"Unknown voice {voice!r} for model {self._model_uid!r}; its voices: "
                f"{self._voices}")
        base = self._voice.config.length_scale or 1.0
        return SynthesisConfig(speaker_id=self._speakers.get(voice),
                               length_scale=base / float(speed))

    def speech(self, input: str, voice: Optional[str] = None, response_format: str = "mp3",
               speed: float = 1.0, stream: bool = False, cancel=None, **kwargs):
        """OpenAI's create-speech (``POST /v1/audio/speech``).

        Args:
            input: the text, at most :data:`MAX_SPEECH_INPUT` characters.
            voice: one of :attr:`voices` (empty: the first).
            response_format: ``mp3`` | ``opus`` | ``aac`` | ``flac`` | ``wav`` | ``pcm``.
            speed: 0.25 .. 4.0 (speaking rate; 1 is the voice's own).
            stream: return an iterator of encoded byte chunks, one per sentence as it is
                synthesised (plus the encoder's tail), instead of the whole file.
            cancel: a ``threading.Event`` set when the caller went away.

        Returns:
            ``bytes`` of the audio file, or an iterator of ``bytes`` when ``stream``.

        Raises:
            InvalidRequestError: empty or too long input, unknown voice or format, speed
            out of range, or an unknown option.
        """
        self._check_extra(kwargs)
        if not isinstance(input, str) or not input.strip():
            raise InvalidRequestError("'input' must be a non-empty string")
        if len(input) > MAX_SPEECH_INPUT:
            raise InvalidRequestError(
                f"'input' is {len(input)} characters; at most {MAX_SPEECH_INPUT} are taken")
        check_choice("response_format", response_format, list(SPEECH_CONTENT_TYPES))
        syn = self._synthesis_config(voice, speed)
        if stream:
            return self._stream(input, syn, response_format, cancel)
        from .codec import AudioEncoder

        enc = AudioEncoder(response_format, self.sample_rate, streaming=False)
        for chunk in self._voice.synthesize(input, syn):
            if cancel is not None and cancel.is_set():
                break
            enc.encode(chunk.audio_float_array)
        return enc.finish()

    def _stream(self, text: str, syn, response_format: str, cancel) -> Iterator[bytes]:
        from .codec import AudioEncoder

        enc = AudioEncoder(response_format, self.sample_rate, streaming=True)
        for chunk in self._voice.synthesize(text, syn):
            if cancel is not None and cancel.is_set():
                return
            data = enc.encode(chunk.audio_float_array)
            if data:
                yield data
        tail = enc.finish()
        if tail:
            yield tail
