"""Which callers may point the server at files of their choice (auth on).

Three launch and registration fields reach past the model registry: ``model_path`` (load
any path of the server), ``trust_remote_code`` (run the Python that comes with the
weights) and a custom registration's ``model_uri`` (a path, ``file://`` or plain). With
``--auth-config`` they need the ``admin`` permission, except for paths inside the
directories an operator lists in ``XINFERENCE_ALLOWED_MODEL_DIRS`` (separated by ``:``;
symlinks resolved, so a link cannot lead out): there, any caller with the route's own
permission may use them, and ``trust_remote_code`` is allowed for a ``model_path`` there.
The check runs in the gateway before anything touches the path, and the refusal reads the
same whether the path exists or not, so a non-admin learns nothing about the server's
files. With auth off every caller is treated as an admin (as for every other route).
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterator, List

from ..errors import PermissionDeniedError

XINFERENCE_ENV_ALLOWED_MODEL_DIRS = "XINFERENCE_ALLOWED_MODEL_DIRS"


def allowed_model_dirs() -> List[str]:
    """The real paths of ``$XINFERENCE_ALLOWED_MODEL_DIRS`` (``os.pathsep``-separated;
    empty entries ignored)."""
    raw = os.environ.get(XINFERENCE_ENV_ALLOWED_MODEL_DIRS, "")
    return [os.path.realpath(os.path.expanduser(d)) for d in raw.split(os.pathsep)
            if d.strip()]


def is_allowed_path(path_or_uri: str) -> bool:
    """``path_or_uri`` (a path or ``file://`` URI) lies inside an allowed directory, after
    symlinks and ``..`` are resolved. Never raises; the answer does not depend on whether
    the path exists (a missing path is judged by where it would be)."""
    from ..model.cache_manager import uri_to_path

    try:
        real = os.path.realpath(uri_to_path(str(path_or_uri)))
    except (OSError, ValueError):
        return False
    return any(real == d or real.startswith(d.rstrip(os.sep) + os.sep)
               for d in allowed_model_dirs())


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _refuse(what: str) -> PermissionDeniedError:
    return PermissionDeniedError(
        f"{what} needs the 'admin' permission (or a path inside "
        f"{XINFERENCE_ENV_ALLOWED_MODEL_DIRS}, set by the server's operator)")


def check_launch(launch: dict, is_admin: bool) -> None:
    """Refuse a launch request (``POST /v1/models`` fields) that a non-admin may not make:
    ``model_path`` outside the allowed directories, ``trust_remote_code`` unless the
    weights come from a ``model_path`` inside them.

    Raises:
        PermissionDeniedError: (403) naming the field, never the path's existence."""
    if is_admin:
        return
    path = launch.get("model_path")
    if path is not None and not is_allowed_path(path):
        raise _refuse("'model_path' outside the allowed model directories")
    if _truthy(launch.get("trust_remote_code")) and (path is None
                                                      or not is_allowed_path(path)):
        raise _refuse("'trust_remote_code' (it runs the model's own Python code)")


def _model_uris(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "model_uri" and v is not None:
                yield v
            else:
                yield from _model_uris(v)
    elif isinstance(node, list):
        for v in node:
            yield from _model_uris(v)


def check_registration(model: Any, is_admin: bool) -> None:
    """Refuse a custom registration (the ``model`` JSON, a string or a dict) by a
    non-admin when any ``model_uri`` in it (top level or in ``model_specs``) lies outside
    the allowed directories. A body that is not JSON is left to the registry's own 400.

    Raises:
        PermissionDeniedError: (403) as :func:`check_launch`."""
    if is_admin:
        return
    if isinstance(model, str):
        try:
            model = json.loads(model)
        except ValueError:
            return
    for uri in _model_uris(model):
        if not isinstance(uri, str) or not is_allowed_path(uri):
            raise _refuse("'model_uri' outside the allowed model directories")


def is_admin_caller(api, request) -> bool:
    """True when auth is off, or the caller of ``request`` holds ``admin``."""
    from .caller import request_caller

    return api.auth is None or request_caller(request)[1]

