"""Request guards of the REST gateway, in front of every route (pure ASGI middlewares, so
streamed answers and disconnect detection pass through untouched):

* :class:`BodyLimitMiddleware`: one body-size limit for every route, enforced while the
  body is read. ``Content-Length`` is checked first; a chunked body is counted as it
  arrives and cut at the limit. Defaults: :data:`DEFAULT_MAX_BODY_BYTES` (1 MiB) for JSON,
  forms and anything else, :data:`UPLOAD_MAX_BODY_BYTES` for ``multipart/form-data``
  uploads (whose routes keep their own, tighter per-file caps),
  :data:`MEDIA_JSON_MAX_BODY_BYTES` for the JSON routes that carry images as ``data:``
  URIs (:data:`MEDIA_JSON_ROUTES`: chat, Anthropic messages, embeddings; the model checks
  each image against its own, smaller limit), :data:`LOGIN_MAX_BODY_BYTES` (16 KiB) for
  ``POST /token``. ``$XINFERENCE_MAX_BODY_BYTES`` (``--max-body-bytes``)
  changes the first. Over a limit: 413 in the gateway's JSON error shape.
* :class:`HostCheckMiddleware`: a server bound to a loopback address answers only requests
  whose ``Host`` is a loopback name (``localhost``, ``127.0.0.1``, ``[::1]``, any port),
  unless ``$XINFERENCE_ALLOWED_HOSTS`` (``--allowed-hosts``, comma separated, ``*`` for
  any) lists others. This stops DNS-rebinding pages from driving a local server. Other
  hosts: 400.
* :class:`LoginRateLimiter`: ``POST /token`` password checks per client address (a token
  bucket: ``$XINFERENCE_LOGIN_ATTEMPTS_PER_MINUTE``, default 10, with that many in a
  burst; malformed forms do not count); over it: 429 with ``Retry-After`` (seconds).

:func:`public_base_url` is the base of the URLs the server writes into answers (generated
image and video files): ``$XINFERENCE_PUBLIC_URL`` (``--public-url``) or the address the
connection reached, never the ``Host`` header.
"""

from __future__ import annotations

import ipaddress
import math
import os
import time
from typing import Dict, FrozenSet, Iterable, Optional, Tuple

from fastapi import HTTPException

from .errors import error_response

XINFERENCE_ENV_MAX_BODY_BYTES = "XINFERENCE_MAX_BODY_BYTES"
XINFERENCE_ENV_ALLOWED_HOSTS = "XINFERENCE_ALLOWED_HOSTS"
XINFERENCE_ENV_PUBLIC_URL = "XINFERENCE_PUBLIC_URL"
XINFERENCE_ENV_LOGIN_RATE = "XINFERENCE_LOGIN_ATTEMPTS_PER_MINUTE"

#: default body limit of every route that is not an upload or the login (bytes)
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: body limit of ``multipart/form-data`` requests (bytes): an image and a mask of 32 MiB
#: each, or an audio upload (whose route caps it at ``$XINFERENCE_AUDIO_MAX_UPLOAD_MB``)
UPLOAD_MAX_BODY_BYTES = 64 * 1024 * 1024 + 256 * 1024
#: body limit of ``POST /token`` (bytes)
LOGIN_MAX_BODY_BYTES = 16 * 1024
#: body limit of the JSON routes whose requests may carry images inline (bytes): a few
#: base64 images of up to 20 MiB each (the chat engines' per-image limit) fit.
MEDIA_JSON_MAX_BODY_BYTES = 64 * 1024 * 1024
MEDIA_JSON_ROUTES = frozenset({"/v1/chat/completions", "/v1/messages", "/v1/embeddings"})
#: login attempts per minute and client address, by default
DEFAULT_LOGIN_ATTEMPTS_PER_MINUTE = 10

#: host names a loopback-bound server answers without ``--allowed-hosts``
LOOPBACK_NAMES = frozenset({"localhost"})


def max_body_bytes() -> int:
    """``$XINFERENCE_MAX_BODY_BYTES`` (a positive integer), else
    :data:`DEFAULT_MAX_BODY_BYTES`.

    Raises:
        ValueError: the variable is set but not a positive integer.
    """
    raw = os.environ.get(XINFERENCE_ENV_MAX_BODY_BYTES)
    if not raw:
        return DEFAULT_MAX_BODY_BYTES
    value = int(raw)
    if value <= 0:
        raise ValueError(f"{XINFERENCE_ENV_MAX_BODY_BYTES} must be positive, got {raw!r}")
    return value


class BodyTooLarge(HTTPException):
    """Raised from the wrapped ``receive`` when a body passes its limit; an HTTP error
    (FastAPI passes it on while it reads a body), so the gateway's error mapping answers
    413 (see :func:`xinference.api.errors.install_error_handlers`)."""

    def __init__(self, limit: int):
        super().__init__(413, f"The request body is larger than {limit} bytes, the limit "
                              "of this route")
        self.limit = limit


def _header(scope, name: bytes) -> Optional[str]:
    for k, v in scope.get("headers") or []:
        if k.lower() == name:
            return v.decode("latin-1")
    return None


def body_limit_for(scope, default: int) -> int:
    """The body limit (bytes) of one HTTP request: ``/token``, uploads, JSON with images,
    or ``default``."""
    path = scope.get("path")
    if path == "/token":
        return min(LOGIN_MAX_BODY_BYTES, default)
    ctype = (_header(scope, b"content-type") or "").lower()
    if ctype.startswith("multipart/form-data"):
        return max(UPLOAD_MAX_BODY_BYTES, default)
    if path in MEDIA_JSON_ROUTES:
        return max(MEDIA_JSON_MAX_BODY_BYTES, default)
    return default


class BodyLimitMiddleware:
    """Refuse or cut request bodies over their limit (:func:`body_limit_for`) with 413.

    Args:
        app: the ASGI app behind.
        default: the limit of ordinary routes in bytes (default :func:`max_body_bytes`).
    """

    def __init__(self, app, default: Optional[int] = None):
        self.app = app
        self.default = default if default is not None else max_body_bytes()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = body_limit_for(scope, self.default)
        declared = _header(scope, b"content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            return await _too_large(limit)(scope, receive, send)
        seen = 0
        started = False

        async def counted_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watched_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except BodyTooLarge as e:  # raised where no route's error mapping saw it
            if not started:
                await _too_large(e.limit)(scope, receive, send)


def _too_large(limit: int):
    resp = error_response(413, f"The request body is larger than {limit} bytes, the limit "
                               "of this route", "invalid_request_error")
    resp.headers["Connection"] = "close"  # the rest of the body is not read
    return resp


# ---- Host header ---------------------------------------------------------------------------
def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name, without port or brackets) is loopback."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def split_host(value: str) -> str:
    """The host name of a ``Host`` header value (port and IPv6 brackets removed, lower
    case)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def allowed_hosts_from_env() -> Optional[FrozenSet[str]]:
    """``$XINFERENCE_ALLOWED_HOSTS`` as a set of lower-case names (``*`` allows any);
    None when unset."""
    raw = os.environ.get(XINFERENCE_ENV_ALLOWED_HOSTS)
    if raw is None or not raw.strip():
        return None
    return frozenset(split_host(h) for h in raw.split(",") if h.strip())


class HostCheckMiddleware:
    """Answer 400 to requests whose ``Host`` is not allowed.

    Args:
        app: the ASGI app behind.
        allowed: names allowed besides the loopback ones (``*``: any host).
        loopback_only: the server is bound to a loopback address, so only loopback names
            (and ``allowed``) are answered. When False and ``allowed`` is empty, nothing
            is checked.
    """

    def __init__(self, app, allowed: Iterable[str] = (), loopback_only: bool = True):
        self.app = app
        self.allowed = frozenset(allowed)
        self.loopback_only = loopback_only

    def permits(self, host_header: Optional[str]) -> bool:
        """Whether a request with this ``Host`` value is answered."""
        if "*" in self.allowed:
            return True
        if not host_header:
            return False  # HTTP/1.1 requires it; HTTP/1.0 clients are not served
        host = split_host(host_header)
        if host in self.allowed:
            return True
        if self.loopback_only or self.allowed:
            return is_loopback(host)
        return True

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self.permits(_header(scope, b"host")):
            return await self.app(scope, receive, send)
        resp = error_response(400, "Invalid Host header: this server answers only the host "
                                   "names it is configured for (see --allowed-hosts)")
        return await resp(scope, receive, send)


def public_base_url(scope) -> str:
    """The base URL (no trailing slash) of URLs the server writes into answers:
    ``$XINFERENCE_PUBLIC_URL`` when set, else the scheme and the local address the
    connection reached (``scope["server"]``)."""
    configured = os.environ.get(XINFERENCE_ENV_PUBLIC_URL)
    if configured:
        return configured.rstrip("/")
    scheme = scope.get("scheme", "http")
    server = scope.get("server")
    if not server:
        return f"{scheme}://127.0.0.1"
    host, port = server[0], server[1]
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + ("" if port in (None, default) else f":{port}")


# ---- login rate limit ----------------------------------------------------------------------
class LoginRateLimiter:
    """A token bucket per client address: ``per_minute`` attempts a minute, up to that many
    at once. :meth:`take` returns 0 when an attempt is allowed, else the seconds until the
    next one is (the ``Retry-After`` value)."""

    #: most addresses remembered; the fullest buckets are forgotten first
    MAX_CLIENTS = 10000

    def __init__(self, per_minute: Optional[float] = None):
        if per_minute is None:
            raw = os.environ.get(XINFERENCE_ENV_LOGIN_RATE)
            per_minute = float(raw) if raw else DEFAULT_LOGIN_ATTEMPTS_PER_MINUTE
        if per_minute <= 0:
            raise ValueError("login attempts per minute must be positive")
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0  # tokens per second
        self._buckets: Dict[str, Tuple[float, float]] = {}  # client -> (tokens, at)

    def take(self, client: str, now: Optional[float] = None) -> int:
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / self.rate))
        self._buckets[client] = (tokens - 1.0, now)
        if len(self._buckets) > self.MAX_CLIENTS:
            self._forget(now)
        return 0

    def _forget(self, now: float) -> None:
        full = [c for c, (t, at) in self._buckets.items()
                if min(self.capacity, t + (now - at) * self.rate) >= self.capacity]
        for c in full:
            del self._buckets[c]
        while len(self._buckets) > self.MAX_CLIENTS:
            self._buckets.pop(next(iter(self._buckets)))
