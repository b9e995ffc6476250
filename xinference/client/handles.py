"""Handles for non-LLM model types (embedding, rerank ...), chosen by ``model_type``."""

from __future__ import annotations

from .restful_client import RESTfulClientError, RESTfulModelHandle

_HANDLES = {}


def handle_for(model_type: str, args) -> RESTfulModelHandle:
    """The handle class registered for ``model_type``.

    Raises:
        RESTfulClientError: no handle for that type.
    """
    cls = _HANDLES.get(model_type)
    if cls is None:
        raise RESTfulClientError("get model", 400, f"no client handle for model type {model_type!r}")
    return cls(*args)
