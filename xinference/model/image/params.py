"""Request parameters shared by the image and video routes and engines (pure Python: the
gateway imports this module to refuse bad requests before they reach a model process).

* ``size``: Xinference writes ``"512*512"``, OpenAI ``"512x512"``; both are ``W*H``.
* ``n``: 1 .. :data:`MAX_N` images (or videos) per request, OpenAI's bound for ``n``.
* ``response_format``: ``"url"`` (a URL served by this server) or ``"b64_json"``.
* Work bounds (400 naming the limit): at most :data:`MAX_IMAGE_PIXELS` pixels per
  generated image or video frame (a ``size``, or the input's size for image-to-image and
  inpainting without ``size``), :data:`MAX_INPUT_PIXELS` per uploaded image (checked from
  its header, before decoding), :data:`MAX_INFERENCE_STEPS` diffusion steps,
  :data:`MAX_NUM_FRAMES` video frames.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional, Tuple

from ...errors import InvalidRequestError
from ..options import json_object

MAX_N = 10
#: most pixels of a generated image or video frame (2048x2048)
MAX_IMAGE_PIXELS = 2048 * 2048
#: most pixels of an uploaded image (decompression bombs are refused from the header)
MAX_INPUT_PIXELS = 8192 * 8192
#: most diffusion steps per request (``num_inference_steps``)
MAX_INFERENCE_STEPS = 500
#: most frames per generated video (``num_frames``)
MAX_NUM_FRAMES = 512
RESPONSE_FORMATS = ("url", "b64_json")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*[*xX×]\s*(\d+)\s*$")


def parse_size(size: Any) -> Optional[Tuple[int, int]]:
    """``"512*512"`` / ``"512x512"`` → ``(512, 512)`` (width, height); None or ``"auto"``
    → None (the model's default size).

    Raises:
        InvalidRequestError: anything else (``"512"``, ``"a*b"``, zero sides).
    """
    if size is None or (isinstance(size, str) and size.strip().lower() in ("", "auto")):
        return None
    m = _SIZE_RE.match(str(size))
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise InvalidRequestError(
            f"'size' must be WIDTH*HEIGHT or WIDTHxHEIGHT (e.g. '512*512'), got {size!r}"
        )
    wh = int(m.group(1)), int(m.group(2))
    check_pixels(wh, "'size'")
    return wh


def check_pixels(wh: Tuple[int, int], what: str, limit: int = MAX_IMAGE_PIXELS) -> None:
    """Refuse ``wh`` (width, height) over ``limit`` pixels, naming ``what``.

    Raises:
        InvalidRequestError: too many pixels (the message names the limit).
    """
    if wh[0] * wh[1] > limit:
        raise InvalidRequestError(
            f"{what} is {wh[0]}x{wh[1]} = {wh[0] * wh[1]} pixels; the limit is {limit} "
            "pixels")


def check_bounded_int(name: str, value: Any, limit: int) -> Optional[int]:
    """``value`` of the option ``name`` as an int in 1 .. ``limit`` (None stays None).

    Raises:
        InvalidRequestError: not a positive integer, or over ``limit`` (named).
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequestError(f"'{name}' must be a positive integer, got {value!r}")
    if value > limit:
        raise InvalidRequestError(f"'{name}' is {value}; the limit is {limit}")
    return value


def check_n(n: Any) -> int:
    """``n`` as an int in 1 .. :data:`MAX_N`.

    Raises:
        InvalidRequestError: not an integer, or out of range.
    """
    if n is None:
        return 1
    try:
        if isinstance(n, bool):
            raise ValueError
        value = int(str(n).strip())
    except (TypeError, ValueError):
        raise InvalidRequestError(f"'n' must be an integer, got {n!r}") from None
    if not 1 <= value <= MAX_N:
        raise InvalidRequestError(f"'n' must be between 1 and {MAX_N}, got {value}")
    return value


def check_response_format(value: Any) -> str:
    """``"url"`` (default) or ``"b64_json"``.

    Raises:
        InvalidRequestError: anything else.
    """
    if value in (None, ""):
        return "url"
    if value not in RESPONSE_FORMATS:
        raise InvalidRequestError(
            f"'response_format' must be one of {list(RESPONSE_FORMATS)}, got {value!r}"
        )
    return value


def parse_kwargs(kwargs: Any) -> Dict[str, Any]:
    """Xinference's ``kwargs`` field: a JSON object, given as an object or as a JSON string
    (multipart forms can only send strings). None → ``{}``.

    Raises:
        InvalidRequestError: not JSON, or not an object.
    """
    if kwargs in (None, ""):
        return {}
    return json_object(kwargs, "'kwargs' is not valid JSON", "'kwargs' must be a JSON object")
