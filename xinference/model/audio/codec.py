"""Audio decoding and encoding with PyAV (FFmpeg). Imported only inside model processes.

* :func:`decode_audio`: any container/codec FFmpeg reads (wav, mp3, flac, ogg, webm, m4a
  ...) to mono float32 samples at a given rate.
* :class:`AudioEncoder`: float32 mono samples to ``mp3`` (libmp3lame), ``opus`` (libopus in
  Ogg), ``aac`` (ADTS), ``flac``, ``wav`` (16-bit PCM) or ``pcm`` (raw 16-bit little-endian
  at 24 kHz, as OpenAI defines it), incrementally, so speech can be streamed as it is made.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from typing import List, Optional

import numpy as np

from ...errors import InvalidRequestError
from .formats import SPEECH_CONTENT_TYPES

#: response_format -> (FFmpeg muxer, encoder, sample rate or None for the input's)
_CONTAINERS = {
    "mp3": ("mp3", "libmp3lame", None),
    "opus": ("ogg", "libopus", 48000),  # libopus takes 8/12/16/24/48 kHz
    "aac": ("adts", "aac", None),
    "flac": ("flac", "flac", None),
}
PCM_RATE = 24000


#: longest audio a transcription decodes by default, in seconds (a launch option,
#: ``max_audio_seconds``, changes it per model): compressed silence is small, its decoded
#: float32 samples are not (600 s of FLAC silence: 114 KB in, 38 MB decoded)
DEFAULT_MAX_AUDIO_SECONDS = 1800.0


def decode_audio(data: bytes, sampling_rate: int = 16000,
                 max_seconds: Optional[float] = DEFAULT_MAX_AUDIO_SECONDS) -> np.ndarray:
    """Decode an audio file's bytes to mono float32 samples in [-1, 1] at
    ``sampling_rate`` Hz (the first audio stream; channels are mixed down).

    ``max_seconds``: decoding stops with a 400 as soon as the audio is longer (None: no
    bound), so memory stays below ``max_seconds * sampling_rate * 4`` bytes.

    Raises:
        InvalidRequestError: empty input, not a media file FFmpeg can read, no audio
        stream, no samples, or longer than ``max_seconds``.
    """
    import av

    if not data:
        raise InvalidRequestError("The audio file is empty")
    parts: List[np.ndarray] = []
    try:
        with av.open(io.BytesIO(data), mode="r", metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise InvalidRequestError("The file has no audio stream")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sampling_rate)
            limit = None if max_seconds is None else int(max_seconds * sampling_rate)
            total = 0

            def keep(out) -> None:
                nonlocal total
                a = out.to_ndarray().reshape(-1)
                total += a.size
                if limit is not None and total > limit:
                    raise InvalidRequestError(
                        f"The audio is longer than {max_seconds:g} seconds, the limit of "
                        "this model (launch option 'max_audio_seconds')")
                parts.append(a)

            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    keep(out)
            for out in resampler.resample(None):
                keep(out)
    except InvalidRequestError:
        raise
    except (av.FFmpegError, ValueError, OSError) as e:
        raise InvalidRequestError(f"The file is not audio that can be decoded: {e}") from None
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    if samples.size == 0:
        raise InvalidRequestError("The audio file holds no samples")
    return samples.astype(np.float32, copy=False)


def _int16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


def wav_header(sample_rate: int, data_bytes: Optional[int]) -> bytes:
    """A 44-byte RIFF/WAVE header for 16-bit mono PCM; ``data_bytes=None`` (a stream of
    unknown length) writes the largest sizes, as streaming servers do."""
    size = 0xFFFFFFFF - 36 if data_bytes is None else data_bytes
    return (b"RIFF" + struct.pack("<I", min(size + 36, 0xFFFFFFFF)) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, sample_rate * 2, 2, 16)
            + b"data" + struct.pack("<I", size))


class _Sink:
    """A write-only, non-seekable file for FFmpeg: collects what the muxer writes."""

    def __init__(self):
        self.parts: List[bytes] = []

    def write(self, b) -> int:
        self.parts.append(bytes(b))
        return len(b)

    def take(self) -> bytes:
        out, self.parts = b"".join(self.parts), []
        return out


class AudioEncoder:
    """Encode mono float32 samples at ``sample_rate`` Hz into ``response_format``.

    :meth:`encode` returns the bytes ready so far (possibly ``b""``: encoders and the
    muxer buffer), :meth:`finish` the rest. With ``streaming=False`` everything is returned
    by :meth:`finish`, and container headers hold exact sizes (seekable output); with
    ``streaming=True`` the output is written front to back (WAV sizes marked unknown).

    Raises:
        InvalidRequestError: an unknown ``response_format``.
    """

    def __init__(self, response_format: str, sample_rate: int, streaming: bool = False):
        if response_format not in SPEECH_CONTENT_TYPES:
            raise InvalidRequestError(
                f"'response_format' must be one of {list(SPEECH_CONTENT_TYPES)}, "
                f"got {response_format!r}")
        self.response_format = response_format
        self.content_type = SPEECH_CONTENT_TYPES[response_format]
        self.sample_rate = sample_rate
        self.streaming = streaming
        self._pts = 0
        self._pcm: List[bytes] = []  # wav/pcm (not streaming): samples until finish()
        self._header_sent = False
        self._container = self._stream = self._out = self._resampler = None
        if response_format in _CONTAINERS:
            self._open_container()
        elif response_format == "pcm" and sample_rate != PCM_RATE:
            import av

            self._resampler = av.AudioResampler(format="s16", layout="mono", rate=PCM_RATE)

    def _open_container(self) -> None:
        import av

        muxer, codec, rate = _CONTAINERS[self.response_format]
        self._out = _Sink() if self.streaming else io.BytesIO()
        self._container = av.open(self._out, mode="w", format=muxer,
                                  buffer_size=4096 if self.streaming else 32768)
        self._stream = self._container.add_stream(codec, rate=rate or self.sample_rate,
                                                  layout="mono")

    def _frame(self, samples: np.ndarray):
        import av

        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1),
            format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self._pts
        frame.time_base = Fraction(1, self.sample_rate)
        self._pts += frame.samples
        return frame

    def _taken(self) -> bytes:
        if isinstance(self._out, _Sink):
            return self._out.take()
        return b""

    def encode(self, samples: np.ndarray) -> bytes:
        """Add samples (float32 in [-1, 1]); returns the encoded bytes ready now."""
        if samples.size == 0:
            return b""
        fmt = self.response_format
        if self._container is not None:
            for packet in self._stream.encode(self._frame(samples)):
                self._container.mux(packet)
            return self._taken()
        if fmt == "pcm" and self._resampler is not None:
            data = b"".join(bytes(f.planes[0])[: f.samples * 2]
                            for f in self._resampler.resample(self._frame(samples)))
        else:
            data = _int16(samples)
        if not self.streaming:
            self._pcm.append(data)
            return b""
        if fmt == "pcm":
            return data
        if not self._header_sent:
            self._header_sent = True
            data = wav_header(self.sample_rate, None) + data
        return data

    def finish(self) -> bytes:
        """Flush the encoder and close the container; returns the remaining bytes (all of
        them when not streaming)."""
        fmt = self.response_format
        if self._container is not None:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            self._container.close()
            if isinstance(self._out, io.BytesIO):
                return self._out.getvalue()
            return self._out.take()
        if fmt == "pcm":
            tail = b"" if self._resampler is None else b"".join(
                bytes(f.planes[0])[: f.samples * 2] for f in self._resampler.resample(None))
            return tail if self.streaming else b"".join(self._pcm) + tail
        if self.streaming:
            return b"" if self._header_sent else wav_header(self.sample_rate, None)
        data = b"".join(self._pcm)
        return wav_header(self.sample_rate, len(data)) + data
