"""Parsing of launch options shared by the engines (values arrive as JSON numbers from
``POST /v1/models`` and as strings from ``xinference launch --key value``)."""

from __future__ import annotations

from typing import Any, Optional

from ..core.errors import InvalidRequestError


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
