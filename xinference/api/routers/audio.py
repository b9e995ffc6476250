"""Audio: OpenAI's ``/v1/audio/transcriptions`` and ``/v1/audio/translations``
(multipart upload in, JSON or text out) and ``/v1/audio/speech`` (JSON in, audio bytes out;
streamed as it is synthesised with ``stream=true``).

Uploads are read here with a size cap (``$XINFERENCE_AUDIO_MAX_UPLOAD_MB``, default 25 MB;
over it: 413) and sent to the model process as bytes; decoding happens there.
"""

from __future__ import annotations

from typing import Any, Dict, Type

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from pydantic import ValidationError

from ...errors import InvalidRequestError, PayloadTooLargeError
from ...core.streams import ModelStream
from ...model.audio.formats import SPEECH_CONTENT_TYPES
from ..schemas.audio import (
    CreateSpeechRequest,
    TranscriptionForm,
    TranslationForm,
    _AudioForm,
    max_upload_bytes,
)
from . import Route, Router

# Form fields of an upload besides the file (the rest is refused with the known names).
_LIST_FIELDS = {"timestamp_granularities[]": "timestamp_granularities",
                "timestamp_granularities": "timestamp_granularities"}


async def read_body_capped(request: Request, limit: int) -> bytes:
    """The request body, read keeping at most ``limit`` bytes (plus room for the form's
    other fields); a larger body is read to its end and discarded (so the client sees the
    answer, not a reset connection).

    Raises:
        PayloadTooLargeError: the body is over the limit (HTTP 413).
    """
    room = limit + 64 * 1024
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > 4 * room:
        raise PayloadTooLargeError(  # too big to even drain
            f"The upload is {int(declared)} bytes; the limit is {limit} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total <= room:
            chunks.append(chunk)
    if total > room:
        raise PayloadTooLargeError(
            f"The upload is {total} bytes; the limit is {limit} bytes")
    return b"".join(chunks)


async def read_upload(request: Request, schema: Type[_AudioForm]):
    """``(audio bytes, validated form)`` of a multipart audio request.

    Raises:
        PayloadTooLargeError: over the upload limit (413).
        RequestValidationError: no ``file`` part, a missing ``model``, a value of the
            wrong type (422).
        InvalidRequestError: unknown form fields (400).
    """
    limit = max_upload_bytes()
    body = await read_body_capped(request, limit)

    async def replay() -> Dict[str, Any]:  # the kept body, for the form parser
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=64)
    try:
        return await _validated(form, schema, limit)
    finally:
        await form.close()


async def _validated(form, schema: Type[_AudioForm], limit: int):
    upload = form.get("file")
    fields: Dict[str, Any] = {}
    for key in set(form.keys()) - {"file"}:
        if key in _LIST_FIELDS:
            fields[_LIST_FIELDS[key]] = form.getlist(key)
        else:
            fields[key] = form.get(key)
    unknown = sorted(set(fields) - set(schema.model_fields))
    if unknown:
        raise InvalidRequestError(
            f"Unknown form field(s) {unknown}; this route takes "
            f"{['file'] + sorted(schema.model_fields)}")
    errors = []
    if upload is None or isinstance(upload, str):
        errors.append({"type": "missing", "loc": ("body", "file"),
                       "msg": "Field required (an audio file upload)", "input": None})
    try:
        body = schema.model_validate(fields)
    except ValidationError as e:
        errors.extend(dict(err, loc=("body", *err["loc"])) for err in e.errors())
    if errors:
        raise RequestValidationError(errors)
    data = await upload.read()
    if len(data) > limit:
        raise PayloadTooLargeError(f"The file is {len(data)} bytes; the limit is {limit} bytes")
    if not data:
        raise InvalidRequestError("The audio file is empty")
    return data, body


class AudioRouter(Router):
    """OpenAI's Audio API; every route needs ``models:read``."""

    ROUTES = [
        Route("POST", "/v1/audio/transcriptions", "create_transcription", "models:read"),
        Route("POST", "/v1/audio/translations", "create_translation", "models:read"),
        Route("POST", "/v1/audio/speech", "create_speech", "models:read"),
    ]

    async def _transcribe(self, method: str, request: Request, schema):
        data, body = await read_upload(request, schema)
        _, result = await self.api._call_model(method, body.model, data, body.config(),
                                               request)
        if isinstance(result, str):
            return PlainTextResponse(result)
        from ..errors import OrjsonResponse

        return OrjsonResponse(result)

    async def create_transcription(self, request: Request):
        """OpenAI create-transcription: multipart ``file``, ``model``, ``language``,
        ``prompt``, ``response_format`` (``json`` | ``text`` | ``srt`` | ``vtt`` |
        ``verbose_json``), ``temperature``, ``timestamp_granularities[]``, ``kwargs``."""
        return await self._transcribe("transcriptions", request, TranscriptionForm)

    async def create_translation(self, request: Request):
        """OpenAI create-translation (English text): multipart ``file``, ``model``,
        ``prompt``, ``response_format``, ``temperature``, ``kwargs``."""
        return await self._transcribe("translations", request, TranslationForm)

    async def create_speech(self, body: CreateSpeechRequest, request: Request):
        """OpenAI create-speech: audio bytes in ``response_format`` with its content type;
        with ``stream=true`` sent as it is synthesised (chunked)."""
        if body.stream_format not in (None, "audio"):
            raise InvalidRequestError(
                f"'stream_format' {body.stream_format!r} is not supported; use 'audio'")
        config = body.config()
        media = SPEECH_CONTENT_TYPES.get(body.response_format, "application/octet-stream")
        ref, result = await self.api._call_model("speech", body.model, body.input, config,
                                                 request)
        if isinstance(result, ModelStream):
            return StreamingResponse(self.api._byte_stream(ref, result), media_type=media)
        return Response(result, media_type=media)


ROUTERS = [AudioRouter]
