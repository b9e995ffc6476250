"""Image parts of chat messages: turning an OpenAI ``image_url`` part into a decoded image,
safely, before any engine sees it.

Accepted parts (OpenAI Chat Completions)::

    {"type": "image_url", "image_url": {"url": "https://...", "detail": "auto"}}
    {"type": "image_url", "image_url": "data:image/png;base64,..."}

* ``data:image/<fmt>;base64,<data>`` URIs are decoded in place.
* ``http://`` / ``https://`` URLs are fetched by the model's process with a size cap
  (:data:`~xinference.model.images.MAX_IMAGE_BYTES`), a timeout per read
  (:data:`FETCH_TIMEOUT_S`) and at most :data:`MAX_REDIRECTS` redirects. So that the server
  never becomes a proxy into the network it runs in, every host is resolved first and the
  request refused when any of its addresses is loopback, link-local, private, multicast,
  reserved or unspecified; the connection then goes to the checked address itself (no
  second DNS answer can swap it), and each redirect is checked again. An operator lets such
  addresses through with the environment variable ``XINFERENCE_IMAGE_FETCH_ALLOW_PRIVATE=1``
  (a trusted LAN, tests).
* The bytes are decoded by :mod:`xinference.model.images` (the limits every model type
  shares: formats, bytes, pixels); images come back as RGB.
* ``detail``: ``"auto"`` (default) and ``"high"`` give the model the image as sent (its
  processor resizes it as the model needs); ``"low"`` first shrinks it to fit in 512x512
  (OpenAI's low-detail size), which lowers the image tokens of models whose processors keep
  the resolution (Qwen-VL, SmolVLM, ...). Another value is an error.

Every failure is an :class:`InvalidRequestError` (HTTP 400) naming the part
(``messages[i].content[j]``). Pillow is imported lazily.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import socket
import ssl
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Tuple

from ...errors import InvalidRequestError
from .. import images as shared
from ..images import decode_data_uri, decode_image, is_data_uri

FETCH_TIMEOUT_S = float(os.environ.get("XINFERENCE_IMAGE_FETCH_TIMEOUT", 10))
MAX_REDIRECTS = 3
ALLOW_PRIVATE_ENV = "XINFERENCE_IMAGE_FETCH_ALLOW_PRIVATE"
DETAILS = ("auto", "low", "high")
LOW_DETAIL_SIDE = 512
DEFAULT_MAX_IMAGES = 8


@dataclass
class ImageInput:
    """One decoded image of a request: ``image`` (an RGB ``PIL.Image``), where it came
    from (``where``: ``messages[i].content[j]``) and its ``detail``."""

    image: Any
    where: str
    detail: str = "auto"


def allow_private() -> bool:
    """True when the operator allows fetching from private/loopback/link-local addresses
    for every model (``XINFERENCE_IMAGE_FETCH_ALLOW_PRIVATE=1`` in the server's
    environment); the launch option ``allow_private_image_urls`` does it for one model."""
    return os.environ.get(ALLOW_PRIVATE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def refused_address(ip: str) -> Optional[str]:
    """Why ``ip`` may not be fetched from (``"loopback"``, ``"private"`` ...), or None."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    for kind in ("loopback", "link_local", "private", "multicast", "reserved",
                 "unspecified"):
        if getattr(addr, f"is_{kind}"):
            return kind.replace("_", "-")
    return None


def _resolve(host: str, port: int, where: str, allow: bool) -> str:
    """The address to connect to: the first of ``host``'s addresses, after checking all.

    Raises:
        InvalidRequestError: unresolvable, or a refused address (unless allowed).
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise InvalidRequestError(f"{where}: cannot resolve image host {host!r}: {e}") from None
    addrs = [i[4][0] for i in infos]
    if not (allow or allow_private()):
        for a in addrs:
            why = refused_address(a)
            if why:
                raise InvalidRequestError(
                    f"{where}: image URL host {host!r} resolves to a {why} address ({a}), "
                    f"which this server does not fetch from (operators can allow it with "
                    f"{ALLOW_PRIVATE_ENV}=1 or the launch option allow_private_image_urls)")
    return addrs[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to an address checked beforehand (the Host header keeps the name)."""

    def __init__(self, host, ip, port, timeout):
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self):
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to an address checked beforehand; the certificate is checked for the name."""

    def __init__(self, host, ip, port, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self):
        sock = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch_url(url: str, where: str, *, max_bytes: Optional[int] = None,
              timeout: float = FETCH_TIMEOUT_S, max_redirects: int = MAX_REDIRECTS,
              allow_private_addresses: bool = False) -> bytes:
    """GET ``url`` under the rules of this module (addresses, redirects, size, time);
    ``allow_private_addresses`` lifts the address rule (as the environment variable does);
    ``max_bytes`` defaults to :data:`~xinference.model.images.MAX_IMAGE_BYTES`.

    Raises:
        InvalidRequestError: a refused or unresolvable address, too many redirects, a non-2xx
        answer, a timeout, or a body over ``max_bytes``; the message starts with ``where``.
    """
    max_bytes = shared.MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    for _ in range(max_redirects + 1):
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise InvalidRequestError(f"{where}: image URL must be http(s) or a data: URI")
        port = u.port or (443 if u.scheme == "https" else 80)
        ip = _resolve(u.hostname, port, where, allow_private_addresses)
        cls = _PinnedHTTPSConnection if u.scheme == "https" else _PinnedHTTPConnection
        conn = cls(u.hostname, ip, port, timeout)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        try:
            conn.request("GET", path, headers={"User-Agent": "xinference-image-fetch",
                                               "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                loc = resp.getheader("Location")
                if not loc:
                    raise InvalidRequestError(f"{where}: image URL redirect without Location")
                url = urllib.parse.urljoin(url, loc)
                continue
            if resp.status // 100 != 2:
                raise InvalidRequestError(
                    f"{where}: fetching the image URL answered HTTP {resp.status}")
            length = resp.getheader("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise InvalidRequestError(
                    f"{where}: image is {int(length)} bytes, over the {max_bytes}-byte limit")
            data = resp.read(max_bytes + 1)
            if len(data) > max_bytes:
                raise InvalidRequestError(
                    f"{where}: image is over the {max_bytes}-byte limit")
            return data
        except (socket.timeout, TimeoutError):
            raise InvalidRequestError(
                f"{where}: fetching the image URL timed out after {timeout:g}s") from None
        except (OSError, http.client.HTTPException) as e:
            raise InvalidRequestError(
                f"{where}: fetching the image URL failed: {type(e).__name__}: {e}") from None
        finally:
            conn.close()
    raise InvalidRequestError(f"{where}: image URL redirected more than {max_redirects} times")


def shrink_for_detail(img, detail: str):
    """``img`` as the model gets it for ``detail``: ``"low"`` shrinks it to fit in
    :data:`LOW_DETAIL_SIDE` x :data:`LOW_DETAIL_SIDE` (in place, aspect kept); ``"auto"`` and
    ``"high"`` leave it as sent."""
    if detail == "low":
        img.thumbnail((LOW_DETAIL_SIDE, LOW_DETAIL_SIDE))
    return img


def image_part_source(part: dict, where: str) -> Tuple[str, str]:
    """``(url, detail)`` of an ``image_url`` (or Responses-style ``input_image``) part.

    Raises:
        InvalidRequestError: no URL, or an unknown ``detail``.
    """
    value = part.get("image_url")
    if value is None and part.get("type") == "input_image":
        value = {"url": part.get("image_url") or part.get("url"), "detail": part.get("detail")}
    if isinstance(value, str):
        url, detail = value, "auto"
    elif isinstance(value, dict):
        url, detail = value.get("url"), value.get("detail") or "auto"
    else:
        url, detail = None, "auto"
    if not isinstance(url, str) or not url:
        raise InvalidRequestError(f"{where}: an image_url part needs image_url.url")
    if detail not in DETAILS:
        raise InvalidRequestError(
            f"{where}: image_url.detail must be one of {list(DETAILS)}, got {detail!r}")
    return url, detail


def load_image_part(part: dict, where: str,
                    fetch: Callable[[str, str], bytes] = fetch_url) -> ImageInput:
    """Decode one ``image_url`` part (a data URI, or an http(s) URL fetched by ``fetch``).

    Raises:
        InvalidRequestError: see :func:`fetch_url`, :func:`decode_data_uri`,
        :func:`decode_image`.
    """
    url, detail = image_part_source(part, where)
    if is_data_uri(url):
        data = decode_data_uri(url, where)
    elif url.split(":", 1)[0].lower() in ("http", "https"):
        data = fetch(url, where)
    else:
        raise InvalidRequestError(
            f"{where}: image URL must be http(s) or a data:image/...;base64 URI")
    return ImageInput(shrink_for_detail(decode_image(data, where), detail), where, detail)


def image_part_locations(messages: Any) -> List[str]:
    """``messages[i].content[j]`` of every image part of an OpenAI ``messages`` list, in
    order (malformed messages are left to :func:`~.chat_template.normalize_messages`)."""
    out = []
    for i, m in enumerate(messages if isinstance(messages, list) else []):
        content = m.get("content") if isinstance(m, dict) else None
        for j, p in enumerate(content if isinstance(content, list) else []):
            if isinstance(p, dict) and p.get("type") in ("image_url", "input_image"):
                out.append(f"messages[{i}].content[{j}]")
    return out


def check_image_count(messages: Any, limit: int) -> None:
    """Raises InvalidRequestError when ``messages`` carry more than ``limit`` images,
    naming the first part over the limit; checked before any image is fetched or decoded."""
    where = image_part_locations(messages)
    if len(where) > limit:
        raise InvalidRequestError(
            f"{where[limit]}: the request has {len(where)} images, more than this "
            f"model's limit of {limit} (launch option max_images)")
