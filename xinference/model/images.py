"""Image bytes a request carries, decoded safely: one set of limits for every model type
that takes images (chat vision parts in ``model/llm/images.py``, CLIP-style ``{"image"}``
embedding items in ``model/embedding/request.py``).

* ``data:image/<fmt>;base64,<data>`` URIs (RFC 2397; the scheme, ``image/`` and
  ``;base64`` are matched case-insensitively) are decoded with at most
  :data:`MAX_IMAGE_BYTES` bytes (``XINFERENCE_IMAGE_MAX_BYTES``, default 20 MiB).
* The bytes must open with Pillow as one of :data:`IMAGE_FORMATS` and have at most
  :data:`MAX_IMAGE_PIXELS` pixels, checked from the header before the pixels are decoded
  (decompression bombs); images come back fully loaded, as RGB.

Where images may come from (URLs, which model types) is the caller's business. Every
failure is an :class:`~xinference.errors.InvalidRequestError` (HTTP 400) whose message
starts with ``where``, the part of the request it is about (``messages[0].content[1]``,
``input[2].image``). Pillow is imported lazily.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from typing import Optional

from ..errors import InvalidRequestError

#: the largest image accepted, in bytes (after base64 decoding, or as fetched)
MAX_IMAGE_BYTES = int(os.environ.get("XINFERENCE_IMAGE_MAX_BYTES", 20 * 1024 * 1024))
#: the most pixels (width x height) an image may have; checked before it is decoded
MAX_IMAGE_PIXELS = 40_000_000
#: Pillow format names accepted (what the model processors read)
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")


def is_data_uri(value: str) -> bool:
    """True when ``value`` starts with the ``data:`` scheme (any case)."""
    return value[:5].lower() == "data:"


def decode_data_uri(uri: str, where: str, max_bytes: Optional[int] = None) -> bytes:
    """The bytes of a ``data:image/...;base64,...`` URI.

    Args:
        max_bytes: the limit in bytes; default :data:`MAX_IMAGE_BYTES` (read at call time).

    Raises:
        InvalidRequestError: not a base64 ``data:image/`` URI, bad base64, over
        ``max_bytes``.
    """
    max_bytes = MAX_IMAGE_BYTES if max_bytes is None else max_bytes
    head, sep, payload = uri.partition(",")
    low = head.lower()
    if not sep or not low.startswith("data:image/") or not low.endswith(";base64"):
        raise InvalidRequestError(
            f"{where}: a data URI must look like data:image/<format>;base64,<data>")
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise InvalidRequestError(f"{where}: image is over the {max_bytes}-byte limit")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{where}: the data URI is not valid base64") from None
    if len(data) > max_bytes:
        raise InvalidRequestError(f"{where}: image is over the {max_bytes}-byte limit")
    return data


def decode_image(data: bytes, where: str):
    """Decode image bytes into an RGB ``PIL.Image`` (fully loaded).

    Raises:
        InvalidRequestError: not an image, a format not in :data:`IMAGE_FORMATS`, more
        than :data:`MAX_IMAGE_PIXELS` pixels, or data that cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError,
            ValueError):
        raise InvalidRequestError(f"{where}: the data is not an image this server can read"
                                  ) from None
    if img.format not in IMAGE_FORMATS:
        raise InvalidRequestError(
            f"{where}: unsupported image format {img.format!r}; supported: "
            f"{list(IMAGE_FORMATS)}")
    if img.width * img.height > MAX_IMAGE_PIXELS:
        raise InvalidRequestError(
            f"{where}: image is {img.width}x{img.height} pixels, over the limit of "
            f"{MAX_IMAGE_PIXELS} pixels")
    try:
        img.load()
        return img.convert("RGB")
    except Exception as e:  # truncated or corrupt data
        raise InvalidRequestError(f"{where}: the image cannot be decoded: {e}") from None


def decode_data_image(uri: str, where: str):
    """:func:`decode_data_uri` then :func:`decode_image`: a ``data:image/...;base64,`` URI
    as an RGB ``PIL.Image``. Raises as those two do."""
    return decode_image(decode_data_uri(uri, where), where)
