"""Parsing of launch options shared by the engines (values arrive as JSON numbers from
``POST /v1/models`` and as strings from ``xinference launch --key value``)."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

from ..errors import InvalidRequestError


def positive_int(name: str, value: Any, default: Optional[int] = None) -> Optional[int]:
    """``value`` as a positive int: an int, an integer-valued float or a numeric string;
    ``None`` gives ``default``.

    Raises:
        InvalidRequestError: anything else (a bool, a fraction, zero or less, not a number),
        naming the option.
    """
    if value is None:
        return default
    try:
        if isinstance(value, bool):
            raise ValueError
        f = float(value)
        n = int(f) if f.is_integer() else 0
    except (TypeError, ValueError, OverflowError):
        n = 0
    if n < 1:
        raise InvalidRequestError(f"'{name}' must be a positive integer, got {value!r}")
    return n


def integer(name: str, value: Any, default: Optional[int] = None) -> Optional[int]:
    """``value`` as an int of any sign: an int or an integer string (``"-1"``); ``None``
    gives ``default``.

    Raises:
        InvalidRequestError: anything else (a bool, a float, not a number), naming the
        option.
    """
    if value is None:
        return default
    if isinstance(value, bool) or not (isinstance(value, (int, str)) and
                                       str(value).strip().lstrip("-").isdigit()):
        raise InvalidRequestError(f"'{name}' must be an integer, got {value!r}")
    return int(value)


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")


def flag(name: str, value: Any, default: Optional[bool] = None) -> Optional[bool]:
    """``value`` as a bool: a bool, 0/1, or one of true/false, yes/no, on/off, 1/0 (any
    case); ``None`` gives ``default``.

    Raises:
        InvalidRequestError: anything else, naming the option.
    """
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidRequestError(f"'{name}' must be true or false, got {value!r}")


def json_object(value: Any, invalid_json: str, not_object: str) -> Dict[str, Any]:
    """``value`` as a dict: a dict as it is, a string parsed as JSON (forms and the CLI can
    only send text).

    Raises:
        InvalidRequestError: ``"{invalid_json}: {why}"`` for text that is not JSON,
        ``not_object`` for anything but a JSON object.
    """
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"{invalid_json}: {e}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError(not_object)
    return value
