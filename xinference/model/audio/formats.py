"""Request constants and response rendering of the audio routes (pure Python, no engine).

Follows OpenAI's Audio API: transcription/translation ``response_format`` ``json``
(``{"text"}``), ``text`` (the transcript), ``srt`` (SubRip), ``vtt`` (WebVTT) and
``verbose_json`` (``task``, ``language``, ``duration``, ``text``, ``segments`` and/or
``words``); speech ``response_format`` ``mp3`` | ``opus`` | ``aac`` | ``flac`` | ``wav`` |
``pcm``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ...errors import InvalidRequestError

TRANSCRIPTION_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
TIMESTAMP_GRANULARITIES = ("segment", "word")

#: speech response_format -> Content-Type of the answer
SPEECH_CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",   # Opus in an Ogg container, as OpenAI sends it
    "aac": "audio/aac",    # ADTS
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",    # raw 16-bit signed little-endian mono samples at 24 kHz
}
SPEED_RANGE = (0.25, 4.0)
#: longest speech ``input`` in characters (OpenAI's limit)
MAX_SPEECH_INPUT = 4096

# Whisper's language codes and the names verbose_json reports (ISO 639-1, plus "haw").
_LANGUAGE_NAMES = dict(pair.split(":") for pair in (
    "en:english zh:chinese de:german es:spanish ru:russian ko:korean fr:french ja:japanese "
    "pt:portuguese tr:turkish pl:polish ca:catalan nl:dutch ar:arabic sv:swedish "
    "it:italian id:indonesian hi:hindi fi:finnish vi:vietnamese he:hebrew uk:ukrainian "
    "el:greek ms:malay cs:czech ro:romanian da:danish hu:hungarian ta:tamil no:norwegian "
    "th:thai ur:urdu hr:croatian bg:bulgarian lt:lithuanian la:latin mi:maori "
    "ml:malayalam cy:welsh sk:slovak te:telugu fa:persian lv:latvian bn:bengali "
    "sr:serbian az:azerbaijani sl:slovenian kn:kannada et:estonian mk:macedonian "
    "br:breton eu:basque is:icelandic hy:armenian ne:nepali mn:mongolian bs:bosnian "
    "kk:kazakh sq:albanian sw:swahili gl:galician mr:marathi pa:punjabi si:sinhala "
    "km:khmer sn:shona yo:yoruba so:somali af:afrikaans oc:occitan ka:georgian "
    "be:belarusian tg:tajik sd:sindhi gu:gujarati am:amharic yi:yiddish lo:lao uz:uzbek "
    "fo:faroese ht:haitian_creole ps:pashto tk:turkmen nn:nynorsk mt:maltese "
    "sa:sanskrit lb:luxembourgish my:myanmar bo:tibetan tl:tagalog mg:malagasy "
    "as:assamese tt:tatar haw:hawaiian ln:lingala ha:hausa ba:bashkir jw:javanese "
    "su:sundanese yue:cantonese"
).split())


def language_name(code: Optional[str]) -> Optional[str]:
    """``"en"`` -> ``"english"`` (OpenAI's ``verbose_json`` spelling); unknown codes are
    returned unchanged."""
    if code is None:
        return None
    return _LANGUAGE_NAMES.get(code, code).replace("_", " ")


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    """``value`` when it is one of ``allowed``.

    Raises:
        InvalidRequestError: naming the field and the allowed values.
    """
    if value not in allowed:
        raise InvalidRequestError(f"'{name}' must be one of {list(allowed)}, got {value!r}")
    return value


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, int(round(float(seconds) * 1000)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def render_srt(segments: Sequence[Dict[str, Any]]) -> str:
    """SubRip: ``1\\n00:00:00,000 --> 00:00:02,500\\ntext\\n\\n`` per segment (needs
    ``start``, ``end``, ``text``; times in seconds)."""
    return "".join(
        f"{i}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n"
        f"{s['text'].strip()}\n\n"
        for i, s in enumerate(segments, 1)
    )


def render_vtt(segments: Sequence[Dict[str, Any]]) -> str:
    """WebVTT: ``WEBVTT`` then ``00:00:00.000 --> 00:00:02.500\\ntext\\n\\n`` per segment."""
    return "WEBVTT\n\n" + "".join(
        f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n"
        f"{s['text'].strip()}\n\n"
        for s in segments
    )


def render_transcript(result: Dict[str, Any], response_format: str,
                      granularities: Sequence[str] = ("segment",)) -> Any:
    """The answer of a transcription or translation in ``response_format``.

    Args:
        result: ``{"task", "language" (code), "duration" (s), "text", "segments": [{"id",
            "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
            "compression_ratio", "no_speech_prob"}], "words": [{"word", "start", "end"}]}``.
        granularities: for ``verbose_json``: ``segment`` includes ``segments``, ``word``
            includes ``words``.

    Returns:
        a dict for ``json`` / ``verbose_json``, a string otherwise.
    """
    text = result["text"]
    if response_format == "json":
        return {"text": text}
    if response_format == "text":
        return text + "\n" if text else text
    if response_format == "srt":
        return render_srt(result["segments"])
    if response_format == "vtt":
        return render_vtt(result["segments"])
    out: Dict[str, Any] = {"task": result["task"], "language": language_name(result["language"]),
                           "duration": result["duration"], "text": text}
    if "word" in granularities:
        out["words"] = result.get("words") or []
    if "segment" in granularities or not granularities:
        out["segments"] = result["segments"]
    return out


def join_segment_texts(segments: List[Dict[str, Any]]) -> str:
    """The transcript of ``segments`` (Whisper's segment texts start with a space)."""
    return "".join(s["text"] for s in segments).strip()
