"""Who sent a request, as the gateway's auth middleware found it, and the ownership of
request ids that follows from it.

With ``--auth-config``, :class:`~xinference.api.auth.AuthMiddleware` puts the user's name
and whether it is an admin into the ASGI scope's state. Every inference call passes the
name to the model process as ``request_owner`` (:func:`with_owner`); the model process keys
its running requests and their progress by ``(owner, request_id)``, so abort and progress
of another user's request answer 404 as for an unknown id, and two users may use the same
id. Admins may abort or read any request. With auth off every caller is the same anonymous
owner (None).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from starlette.requests import Request


def request_caller(request: Optional[Request]) -> Tuple[Optional[str], bool]:
    """``(user, is_admin)`` of the caller that :class:`~xinference.api.auth.AuthMiddleware`
    authenticated; ``(None, False)`` with auth off (every caller is the same anonymous
    owner then)."""
    state = (request.scope.get("state") or {}) if request is not None else {}
    return state.get("user"), bool(state.get("admin"))


def with_owner(config: Dict[str, Any], request: Optional[Request]) -> Dict[str, Any]:
    """``config`` with ``request_owner`` set to the authenticated user (a value the client
    sent under that name is dropped): the model process keys request ids by it, so abort
    and progress of a request answer only its owner (and admins)."""
    config.pop("request_owner", None)
    user, _ = request_caller(request)
    if user is not None:
        config["request_owner"] = user
    return config
