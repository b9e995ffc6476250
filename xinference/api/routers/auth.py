"""Login and auth state: ``POST /token`` (OAuth2 password form → JWT) and
``GET /v1/cluster/auth`` (whether auth is on; public, the web UI asks it first)."""

from __future__ import annotations

from urllib.parse import parse_qs

import orjson
from fastapi import Request

from ...errors import InvalidRequestError, TooManyRequestsError
from . import Route, Router


class AuthRouter(Router):
    ROUTES = [
        Route("POST", "/token", "login", None),
        Route("GET", "/v1/cluster/auth", "cluster_auth", None),
    ]

    async def cluster_auth(self):
        """``{"auth": true}`` when the server checks credentials."""
        return {"auth": self.api.auth is not None}

    async def login(self, request: Request):
        """OAuth2 password grant: a form (``application/x-www-form-urlencoded``, or JSON)
        with ``username`` and ``password``; answers ``{"access_token", "token_type":
        "bearer", "expires_in"}``.

        Raises:
            InvalidRequestError: auth is off, or the form lacks a field (400).
            AuthenticationError: wrong username or password (401).
            TooManyRequestsError: over the login attempts of this client address (429
                with ``Retry-After``; see :class:`~xinference.api.limits.
                LoginRateLimiter`).
        """
        if self.api.auth is None:
            raise InvalidRequestError("Authentication is not enabled on this server")
        body = await request.body()  # at most 16 KiB (xinference.api.limits)
        if (request.headers.get("content-type") or "").startswith("application/json"):
            try:  # orjson: nesting deeper than 1024 is an error, not a RecursionError
                form = orjson.loads(body or b"{}")
            except orjson.JSONDecodeError:
                raise InvalidRequestError("Request body is not valid JSON") from None
            if not isinstance(form, dict):
                raise InvalidRequestError("Send a JSON object with username and password")
        else:
            form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace"),
                                                 keep_blank_values=True).items()}
        grant = form.get("grant_type")
        if grant not in (None, "", "password"):
            raise InvalidRequestError(f"Unsupported grant_type {grant!r}; use 'password'")
        username, password = form.get("username"), form.get("password")
        if not isinstance(username, str) or not isinstance(password, str) or not username:
            raise InvalidRequestError("'username' and 'password' are required")
        # Only attempts that check a password count (a malformed form costs no hash).
        limiter = self.api.login_limiter
        if limiter is not None:
            client = request.client.host if request.client else "?"
            wait = limiter.take(client)
            if wait:
                e = TooManyRequestsError(f"Too many login attempts from {client}; retry "
                                         f"in {wait} s")
                e.retry_after = wait
                raise e
        return self.api.auth.issue_token(username, password)


ROUTERS = [AuthRouter]
