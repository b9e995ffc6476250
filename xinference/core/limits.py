"""Request bounds applied by the ModelActor (in the model's process, so every route and
client gets them): default ``request_limits`` per model type, ``max_tokens`` defaults and
ceilings of LLMs, and request options whose names clash with the actor's own arguments.
See doc/security.md ("Request limits").
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

from ..errors import InvalidRequestError

#: ``request_limits`` of a replica when the launch names none (requests admitted at once,
#: running + waiting; over it: 429 with ``Retry-After``). LLMs batch up to their slots and
#: queue the rest; embedding and rerank engines batch many small requests; image, video
#: and audio requests run a few at a time and take seconds to minutes each. A launch's
#: ``request_limits`` overrides it (see doc/security.md).
DEFAULT_REQUEST_LIMITS: Dict[str, int] = {
    "LLM": 64, "embedding": 256, "rerank": 256, "audio": 16, "image": 8, "video": 4,
}

#: seconds a client is asked to wait (``Retry-After``) when a model is at its limit
RETRY_AFTER_SECONDS = 1

#: the completions route's ``max_tokens`` when a request gives none (OpenAI's documented
#: default for ``/v1/completions``; chat has none)
COMPLETIONS_DEFAULT_MAX_TOKENS = 16

#: keyword names the ModelActor passes to itself or to the engine (``_call``'s own
#: arguments, the engine's ``cancel`` event, the media ``progress``): a request option of
#: that name is refused with 400 (see :func:`request_options`)
RESERVED_OPTIONS = frozenset({"method", "strip_usage", "progress", "cancel"})


def request_options(config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A copy of a request's ``config`` checked to be passable as keyword options: no
    name of :data:`RESERVED_OPTIONS` (the engine method's positional arguments are
    checked by :func:`positional_names` in ``_call``).

    Raises:
        InvalidRequestError: a reserved name (400, naming the field).
    """
    cfg = dict(config or {})
    for k in cfg:
        if k in RESERVED_OPTIONS:
            raise InvalidRequestError(f"'{k}' is not an option of this route (a reserved "
                                      "name)")
    return cfg


def positional_names(fn: Callable, n: int) -> "tuple[str, ...]":
    """The names of the first ``n`` positional parameters of ``fn`` (those that the
    ModelActor fills from the request's input, so an option of that name would clash)."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return ()
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return tuple(p.name for p in params if p.kind in kinds)[:n]


def completion_defaults(config: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """A copy of a completions request's config with ``max_tokens`` set to
    :data:`COMPLETIONS_DEFAULT_MAX_TOKENS` when neither ``max_tokens`` nor
    ``max_completion_tokens`` is given."""
    cfg = dict(config or {})
    if cfg.get("max_tokens") is None and cfg.get("max_completion_tokens") is None:
        cfg["max_tokens"] = COMPLETIONS_DEFAULT_MAX_TOKENS
    return cfg


def cap_max_tokens(cfg: Dict[str, Any], limit: Optional[int]) -> None:
    """Apply a model's ``max_tokens_limit`` to an LLM request's config in place: a request
    without ``max_tokens`` (or ``max_completion_tokens``) gets ``limit``, one asking more
    is clamped to it (not refused: the answer's ``finish_reason`` is ``"length"`` when the
    cap cut it). A value that is not an integer is left for the engine to refuse."""
    if not limit:
        return
    asked = cfg.get("max_tokens")
    if asked is None:
        asked = cfg.get("max_completion_tokens")
    if asked is None or (isinstance(asked, int) and not isinstance(asked, bool)
                         and asked > limit):
        cfg["max_tokens"] = limit
        cfg.pop("max_completion_tokens", None)
