"""What the image and video routes share in the gateway: uploads, generated files served
over HTTP, request progress lookup, and the ``{"created", "data": [...]}`` response.

Generated files: with ``response_format="url"`` each image (PNG) or video (MP4) is written
under ``XINFERENCE_HOME/generated/{images,video}/`` with a random name and answered as a URL
of this server (``GET /v1/images/files/{name}``, ``GET /v1/video/files/{name}``), so a
client on another machine can fetch it. Files are removed
``$XINFERENCE_GENERATED_FILES_TTL`` seconds (default 3600) after they were written: expired
files are swept whenever a new one is written and are never served.

Request progress: each image/video request carries a ``request_id`` (the client's, or one
made here and sent back in the ``X-Request-Id`` header); the gateway remembers which model
serves it, and ``GET /v1/requests/{request_id}/progress`` asks that model.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..constants import xinference_home
from ..errors import InvalidRequestError, PayloadTooLargeError, RequestNotFoundError

XINFERENCE_ENV_GENERATED_FILES_TTL = "XINFERENCE_GENERATED_FILES_TTL"
DEFAULT_GENERATED_FILES_TTL = 3600.0
#: the largest upload (image, mask) accepted, in bytes
MAX_UPLOAD_BYTES = 32 * 1024 * 1024
#: how long the gateway remembers which model serves a request id, in seconds
REQUEST_TTL = 600.0

_NAME_RE = re.compile(r"^[0-9a-f]{32}\.(png|mp4)$")
MEDIA_TYPES = {"png": "image/png", "mp4": "video/mp4"}


def generated_files_ttl() -> float:
    """Seconds a generated file is kept: ``$XINFERENCE_GENERATED_FILES_TTL`` (default
    3600)."""
    try:
        value = float(os.environ.get(XINFERENCE_ENV_GENERATED_FILES_TTL, ""))
    except ValueError:
        return DEFAULT_GENERATED_FILES_TTL
    return value if value > 0 else DEFAULT_GENERATED_FILES_TTL


def generated_dir(kind: str) -> Path:
    """``XINFERENCE_HOME/generated/<kind>`` (``images`` or ``video``)."""
    return xinference_home() / "generated" / kind


def save_generated(kind: str, data: bytes, ext: str) -> str:
    """Write ``data`` as a new file of ``kind``; returns its name. Sweeps expired files."""
    d = generated_dir(kind)
    d.mkdir(parents=True, exist_ok=True)
    sweep_generated(d)
    name = f"{uuid.uuid4().hex}.{ext}"
    tmp = d / f".{name}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, d / name)
    return name


def sweep_generated(d: Path) -> None:
    """Remove files of ``d`` older than :func:`generated_files_ttl`."""
    cutoff = time.time() - generated_files_ttl()
    for p in d.iterdir():
        try:
            if p.stat().st_mtime < cutoff:
                p.unlink()
        except OSError:  # removed meanwhile
            pass


def generated_path(kind: str, name: str) -> Path:
    """The file ``name`` of ``kind`` if it exists and has not expired.

    Raises:
        RequestNotFoundError: a bad name, an unknown file or an expired one (HTTP 404).
    """
    if not _NAME_RE.match(name):
        raise RequestNotFoundError(f"No generated file {name!r}")
    p = generated_dir(kind) / name
    try:
        expired = p.stat().st_mtime < time.time() - generated_files_ttl()
    except OSError:
        raise RequestNotFoundError(f"No generated file {name!r} (it may have expired)") \
            from None
    if expired:
        p.unlink(missing_ok=True)
        raise RequestNotFoundError(f"Generated file {name!r} has expired")
    return p


def render(result: Dict[str, Any], response_format: str, base_url: str, kind: str,
           ext: str) -> Dict[str, Any]:
    """An engine's ``{"created", "data": [bytes, ...]}`` as OpenAI's images response:
    ``{"created", "data": [{"url"} | {"b64_json"}]}``. ``url`` items are files written
    now and served by this server at ``base_url``."""
    data: List[Dict[str, Any]] = []
    route = "images" if kind == "images" else "video"
    for blob in result["data"]:
        if response_format == "b64_json":
            data.append({"url": None, "b64_json": base64.b64encode(blob).decode("ascii")})
        else:
            name = save_generated(kind, blob, ext)
            data.append({"url": f"{base_url.rstrip('/')}/v1/{route}/files/{name}",
                         "b64_json": None})
    return {"created": result["created"], "data": data}


def form_value(value: str) -> Any:
    """A multipart text field as JSON when it parses (``"2"`` → 2, ``"true"`` → True),
    else the string itself."""
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        return value


async def read_form(request) -> Tuple[Dict[str, Any], Dict[str, List[Any]]]:
    """``(fields, files)`` of a multipart (or urlencoded) request: text fields, and the
    uploads' bytes per field name (``image[]`` counts as ``image``).

    Raises:
        InvalidRequestError: the body is not a form.
        PayloadTooLargeError: the body is over twice :data:`MAX_UPLOAD_BYTES`.
    """
    from starlette.datastructures import UploadFile

    from starlette.requests import Request

    from .routers.audio import read_body_capped

    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise InvalidRequestError(
            f"This route takes multipart/form-data, got {ctype or 'no content type'!r}")
    # The whole body is capped before it is parsed (an image and a mask at most).
    body = await read_body_capped(request, 2 * MAX_UPLOAD_BYTES)

    async def replay() -> Dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=4, max_fields=64)
    except Exception as e:
        raise InvalidRequestError(f"Could not read the form: {e}") from None
    fields: Dict[str, Any] = {}
    files: Dict[str, List[Any]] = {}
    for key, value in form.multi_items():
        key = key[:-2] if key.endswith("[]") else key
        if isinstance(value, UploadFile):
            files.setdefault(key, []).append(await value.read())
        else:
            fields[key] = value
    await form.close()
    return fields, files


def read_upload(files: Dict[str, List[bytes]], name: str,
                required: bool = True) -> Optional[bytes]:
    """The bytes of the single upload named ``name``.

    Raises:
        InvalidRequestError: missing (when ``required``) or given several times.
        PayloadTooLargeError: over :data:`MAX_UPLOAD_BYTES`.
    """
    uploads = files.get(name) or []
    if not uploads:
        if required:
            raise InvalidRequestError(f"Upload the file '{name}' (multipart/form-data)")
        return None
    if len(uploads) > 1:
        raise InvalidRequestError(f"Give one '{name}', got {len(uploads)}")
    data = uploads[0]
    if len(data) > MAX_UPLOAD_BYTES:
        raise PayloadTooLargeError(
            f"'{name}' is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MiB")
    return data


class MediaService:
    """Per gateway: which model serves each recent image/video request (for progress),
    by ``(owner, request_id)``: the owner is the authenticated user (None with auth off),
    so one user cannot read another's progress."""

    def __init__(self, api):
        self.api = api
        self._requests: Dict[Tuple[Optional[str], str], Tuple[Any, str, float]] = {}

    def track(self, request_id: str, ref, model_uid: str,
              owner: Optional[str] = None) -> None:
        now = time.monotonic()
        for key, (_, _, t) in list(self._requests.items()):
            if now - t > REQUEST_TTL:
                del self._requests[key]
        self._requests[(owner, request_id)] = (ref, model_uid, now)

    async def progress(self, request_id: str, request=None) -> Dict[str, Any]:
        """``{"request_id", "status", "progress"}`` of a recent request of the caller of
        ``request`` (an admin: of anyone).

        Raises:
            RequestNotFoundError: unknown here (never sent, long finished, or another
                user's).
        """
        from .caller import request_caller

        owner, admin = request_caller(request)
        key = (owner, request_id)
        if key not in self._requests and admin:
            key = next((k for k in list(self._requests) if k[1] == request_id), key)
        entry = self._requests.get(key)
        if entry is None:
            raise RequestNotFoundError(f"No image or video request {request_id!r}")
        ref, model_uid, _ = entry
        return await self.api._call_ref(ref, model_uid, "get_request_progress",
                                          (request_id, key[0]))

    async def call(self, request, method: str, model_uid: str, args: tuple,
                   config: Dict[str, Any]) -> Tuple[Dict[str, Any], str]:
        """Call ``method`` of the model's actor with ``(*args, config)`` under a request
        id (the config's, or a new one); a client that disconnects cancels the call, and
        the engine stops at its next step. Returns ``(result, request_id)``."""
        from .caller import with_owner

        rid = str(config.get("request_id") or uuid.uuid4().hex)
        config["request_id"] = rid
        config = with_owner(config, request)
        owner = config.get("request_owner")
        _, result = await self.api._call_uid(
            model_uid, method, args + (config,), request,
            on_ref=lambda ref: self.track(rid, ref, model_uid, owner))
        return result, rid


def media_service(api) -> MediaService:
    """The gateway's :class:`MediaService` (made on first use)."""
    svc = getattr(api, "_media_service", None)
    if svc is None:
        svc = api._media_service = MediaService(api)
    return svc
