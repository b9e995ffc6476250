"""Speech-to-text on faster-whisper (CTranslate2): ``transcriptions`` and ``translations``
as OpenAI's Audio API defines them. Imported only inside model processes.

Concurrency: the engine methods are ``async`` (the ModelActor awaits requests side by
side); each request decodes and transcribes in one of ``num_workers`` threads, and
CTranslate2 runs that many translations at once (``WhisperModel(num_workers=...)``).
Measured on 2 busy CPU cores with tiny.en (6 s clips, in-process): 4 concurrent requests
finish 1.2x faster with 2 workers of 2 threads than with 1 worker (2 workers of 1 thread:
also 1.2x, but a lone request is slower), so the default is 2 workers, each with every core
(see ``benchmark/bench_audio.py`` for the server).
With the launch option ``batch_size`` a request's audio is cut at pauses (Silero VAD) and
its pieces are decoded in batches (faster-whisper's ``BatchedInferencePipeline``): this
pays off for long recordings on a GPU.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from typing import Any, Dict, List, Optional, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import InvalidRequestError
from .core import AudioModel
from .formats import (
    TIMESTAMP_GRANULARITIES,
    TRANSCRIPTION_FORMATS,
    check_choice,
    join_segment_texts,
    render_transcript,
)

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
# OpenAI's temperature 0: start greedy and raise the temperature when a window fails the
# compression-ratio / log-probability checks (Whisper's fallback schedule).
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


class DecodeOptions(BaseModel):
    """Decoding options a request may add as its JSON ``kwargs`` field (faster-whisper's
    names); anything else is refused."""

    model_config = ConfigDict(extra="forbid")

    beam_size: int = Field(5, ge=1, le=16)
    best_of: int = Field(5, ge=1, le=16)
    patience: float = Field(1.0, gt=0)
    repetition_penalty: float = Field(1.0, gt=0)
    no_speech_threshold: Optional[float] = Field(0.6, ge=0, le=1)
    condition_on_previous_text: bool = True
    vad_filter: Optional[bool] = None  # None: off, on in the batched pipeline
    hotwords: Optional[str] = None


def _pick_device(device: Optional[str], n_gpu: Any) -> str:
    if device:
        return str(device)
    if n_gpu in (0, "0"):
        return "cpu"
    import ctranslate2

    return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"


class WhisperEngine(AudioModel):
    """faster-whisper on a CTranslate2 Whisper directory.

    Launch options: ``device`` (``cpu`` / ``cuda``; default cuda when visible unless
    ``n_gpu=0``), ``compute_type`` (default ``int8`` on CPU, ``float16`` on GPU),
    ``cpu_threads`` (per worker; default every core: one request alone uses them all),
    ``num_workers`` (requests transcribed at once, default 2), ``batch_size`` (batched
    pipeline, see the module docstring; default off), ``max_audio_seconds`` (longest
    decoded audio, default :data:`~xinference.model.audio.codec.DEFAULT_MAX_AUDIO_SECONDS`;
    longer: 400).
    """

    def __init__(self, model_uid, family, model_path, device: Optional[str] = None,
                 n_gpu: Any = None, compute_type: Optional[str] = None,
                 cpu_threads: Optional[int] = None, num_workers: int = 2,
                 batch_size: Optional[int] = None,
                 max_audio_seconds: Optional[float] = None):
        from .codec import DEFAULT_MAX_AUDIO_SECONDS

        super().__init__(model_uid, family, model_path)
        try:
            self._max_seconds = float(max_audio_seconds if max_audio_seconds is not None
                                      else DEFAULT_MAX_AUDIO_SECONDS)
        except (TypeError, ValueError):
            raise InvalidRequestError("'max_audio_seconds' must be a number of seconds, "
                                      f"got {max_audio_seconds!r}") from None
        if not self._max_seconds > 0:
            raise InvalidRequestError("'max_audio_seconds' must be positive")
        self._device = _pick_device(device, n_gpu)
        self._compute_type = compute_type or ("float16" if self._device == "cuda" else "int8")
        self._num_workers = int(num_workers)
        cores = os.cpu_count() or 1
        self._cpu_threads = int(cpu_threads or cores)
        self._batch_size = batch_size
        self._model = None
        self._languages: List[str] = []
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._num_workers, thread_name_prefix="whisper")

    def load(self) -> None:
        """Load the CTranslate2 model (no download: the path is local).

        Raises:
            RuntimeError / ValueError from CTranslate2: not a Whisper model directory, or
            a ``compute_type`` this device lacks.
        """
        from faster_whisper import WhisperModel

        self._model = WhisperModel(self._model_path, device=self._device,
                                   compute_type=self._compute_type,
                                   cpu_threads=self._cpu_threads,
                                   num_workers=self._num_workers, local_files_only=True)
        self._languages = list(self._model.supported_languages)
        if self._model.model.is_multilingual != self._family.multilingual:
            logger.warning("%s: the family says multilingual=%s, the weights say %s",
                           self._model_uid, self._family.multilingual,
                           self._model.model.is_multilingual)

    @property
    def multilingual(self) -> bool:
        """Whether the weights know languages besides English (``.en`` models do not)."""
        return bool(self._model.model.is_multilingual)

    # ---- request checks (event loop, before any decoding) -------------------------------
    def _options(self, response_format, temperature, granularities, kwargs) -> Dict:
        check_choice("response_format", response_format, TRANSCRIPTION_FORMATS)
        grans = list(granularities or [])
        for g in grans:
            check_choice("timestamp_granularities[]", g, TIMESTAMP_GRANULARITIES)
        if grans and response_format != "verbose_json":
            raise InvalidRequestError(
                "'timestamp_granularities[]' needs response_format 'verbose_json'")
        if temperature is None:
            temperature = 0.0
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not 0.0 <= temperature <= 1.0:
            raise InvalidRequestError(
                f"'temperature' must be a number between 0 and 1, got {temperature!r}")
        try:
            opts = DecodeOptions.model_validate(kwargs or {})
        except ValidationError as e:
            from ..registry import format_validation_error

            raise InvalidRequestError(f"Bad 'kwargs': {format_validation_error(e)}") from None
        return dict(opts.model_dump(),
                    temperature=FALLBACK_TEMPERATURES if temperature == 0 else (temperature,),
                    word_timestamps="word" in grans,
                    granularities=grans or ["segment"])

    def _check_language(self, language: Optional[str]) -> Optional[str]:
        if language in (None, ""):
            return None
        if language not in self._languages:
            hint = ("this model is English-only" if not self.multilingual
                    else f"one of {self._languages}")
            raise InvalidRequestError(
                f"'language' {language!r} is not supported: {hint} (ISO-639-1 codes)")
        return language

    # ---- the work (a worker thread) ------------------------------------------------------
    def _run(self, audio: bytes, task: str, language: Optional[str], prompt: Optional[str],
             opts: Dict[str, Any], response_format: str, cancel: threading.Event):
        from .codec import decode_audio

        samples = decode_audio(audio, SAMPLE_RATE, self._max_seconds)
        granularities = opts.pop("granularities")
        kw = dict(opts, language=language, task=task, initial_prompt=prompt or None)
        if self._batch_size:
            from faster_whisper import BatchedInferencePipeline

            kw.pop("condition_on_previous_text", None)  # the batched pipeline has none
            if kw["vad_filter"] is None:  # it cuts audio over 30 s at pauses found by VAD
                kw["vad_filter"] = True
            segments, info = BatchedInferencePipeline(self._model).transcribe(
                samples, batch_size=self._batch_size, **kw)
        else:
            kw["vad_filter"] = bool(kw["vad_filter"])
            segments, info = self._model.transcribe(samples, **kw)
        segs, words = [], []
        for s in segments:  # lazy: decoding happens while iterating
            if cancel.is_set():
                raise asyncio.CancelledError()
            segs.append({"id": s.id, "seek": s.seek, "start": round(float(s.start), 3),
                         "end": round(float(s.end), 3), "text": s.text, "tokens": list(s.tokens),
                         "temperature": s.temperature, "avg_logprob": s.avg_logprob,
                         "compression_ratio": s.compression_ratio,
                         "no_speech_prob": s.no_speech_prob})
            for w in s.words or []:
                words.append({"word": w.word.strip(), "start": round(float(w.start), 3),
                              "end": round(float(w.end), 3)})
        result = {"task": task, "language": info.language,
                  "duration": round(float(info.duration), 3),
                  "text": join_segment_texts(segs), "segments": segs, "words": words}
        return render_transcript(result, response_format, granularities)

    async def _submit(self, *args):
        cancel = threading.Event()
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, self._run, *args, cancel)
        except asyncio.CancelledError:
            cancel.set()  # the worker stops at its next segment
            raise

    async def transcriptions(self, audio: bytes, language: Optional[str] = None,
                             prompt: Optional[str] = None, response_format: str = "json",
                             temperature: Optional[float] = None,
                             timestamp_granularities: Optional[Sequence[str]] = None,
                             kwargs: Optional[Dict[str, Any]] = None) -> Any:
        """OpenAI's create-transcription (``POST /v1/audio/transcriptions``).

        Args:
            audio: the uploaded file's bytes (any format FFmpeg reads).
            language: ISO-639-1 code of the speech (None: detected).
            prompt: text that guides the style or continues a previous segment.
            response_format: ``json`` | ``text`` | ``srt`` | ``vtt`` | ``verbose_json``.
            temperature: 0..1; 0 uses Whisper's temperature fallback.
            timestamp_granularities: ``segment`` and/or ``word`` (``verbose_json`` only).
            kwargs: decoding options (:class:`DecodeOptions`).

        Returns:
            a dict (``json``, ``verbose_json``) or a string (the other formats); see
            :func:`~xinference.model.audio.formats.render_transcript`.

        Raises:
            InvalidRequestError: a bad option, a language the model lacks, or a file that
            is empty or not decodable audio.
        """
        opts = self._options(response_format, temperature, timestamp_granularities, kwargs)
        language = self._check_language(language)
        return await self._submit(audio, "transcribe", language, prompt, opts,
                                  response_format)

    async def translations(self, audio: bytes, prompt: Optional[str] = None,
                           response_format: str = "json",
                           temperature: Optional[float] = None,
                           kwargs: Optional[Dict[str, Any]] = None) -> Any:
        """OpenAI's create-translation (``POST /v1/audio/translations``): English text of
        speech in any language the model knows. An English-only model (``.en``) hears
        only English: its translation is the English transcript (task ``translate`` in
        ``verbose_json`` either way). Arguments, result and errors as
        :meth:`transcriptions`."""
        opts = self._options(response_format, temperature, None, kwargs)
        if self.multilingual:
            return await self._submit(audio, "translate", None, prompt, opts,
                                      response_format)
        out = await self._submit(audio, "transcribe", "en", prompt, opts, response_format)
        if isinstance(out, dict) and "task" in out:
            out["task"] = "translate"
        return out
