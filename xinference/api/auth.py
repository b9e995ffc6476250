"""Authentication and per-route permissions of the REST gateway (off unless configured).

``xinference-local --auth-config FILE`` (and ``xinference-supervisor``) turn it on. The file
is Xinference's 1.x format::

    {
      "auth_config": {"algorithm": "HS256", "secret_key": "<random hex>",
                      "token_expire_in_minutes": 30},
      "user_config": [
        {"username": "alice", "password": "<plain or bcrypt hash>",
         "permissions": ["admin"], "api_keys": ["sk-72tkvudyGLPMi"]},
        {"username": "bob", "password": "...", "permissions": ["models:list", "models:read"],
         "api_keys": []}
      ]
    }

Every request then carries ``Authorization: Bearer <credential>`` (Anthropic clients:
``x-api-key: <credential>``), where the credential is
one of the user's API keys (``sk-`` and at least 13 letters or digits) or a JWT issued by
``POST /token`` (OAuth2 password form). Each route of
:mod:`xinference.api.routers` names the permission it needs; ``admin`` allows everything.
Without a valid credential: 401 with ``WWW-Authenticate: Bearer``; without the permission:
403; both as the gateway's usual JSON error body.

The check runs in one place, :class:`AuthMiddleware`, in front of every route: a route of
the gateway that is neither in a route table (with its scope) nor in :data:`PUBLIC_PATHS`
is refused (fail closed). Static files (the web UI) are public; the UI asks for a key when
an API call answers 401.

The xoscar ports (supervisor, workers, model processes) have no authentication of their
own: keep them on an internal network.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, FrozenSet, Iterable, List, Literal, Optional, Tuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..errors import AuthenticationError, PermissionDeniedError
from .routers import PUBLIC_PATHS as ROUTE_PUBLIC_PATHS

logger = logging.getLogger(__name__)

#: every permission a user may hold (Xinference's names)
PERMISSIONS = frozenset({
    "admin", "models:list", "models:read", "models:start", "models:stop",
    "models:register", "models:unregister", "cache:list", "cache:delete",
})

#: names accepted in ``permissions`` for a group of permissions, or for a renamed one (so a
#: config or a token written with the other name keeps working)
ALIASES: Dict[str, FrozenSet[str]] = {
    "models:*": frozenset(p for p in PERMISSIONS if p.startswith("models:")),
    "cache:*": frozenset({"cache:list", "cache:delete"}),
    "*": frozenset({"admin"}),
    "models:launch": frozenset({"models:start"}),
    "models:terminate": frozenset({"models:stop"}),
}

#: paths served to anyone, auth on or off: the public rows of the route tables and
#: FastAPI's own documentation pages (every other route needs the scope in its row)
PUBLIC_PATHS = frozenset(ROUTE_PUBLIC_PATHS | {
    "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json",
    "/",  # the web UI's entry page (its API calls carry the key)
})

API_KEY_RE = re.compile(r"^sk-[A-Za-z0-9]{13,}$")
ALGORITHMS = ("HS256", "HS384", "HS512")
_BCRYPT_PREFIXES = ("$2a$", "$2b$", "$2y$")


class AuthConfigError(ValueError):
    """The ``--auth-config`` file is unreadable or malformed; the message names the
    field."""


def expand_permissions(names: Iterable[str]) -> FrozenSet[str]:
    """Permission names (aliases allowed) → the permissions they grant.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    out = set()
    for name in names:
        if name in PERMISSIONS:
            out.add(name)
        elif name in ALIASES:
            out |= ALIASES[name]
        else:
            raise ValueError(f"unknown permission {name!r}; known: "
                             f"{sorted(PERMISSIONS | set(ALIASES))}")
    return frozenset(out)


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    algorithm: Literal[ALGORITHMS] = "HS256"  # type: ignore[valid-type]
    secret_key: str = Field(min_length=16)
    token_expire_in_minutes: float = Field(30, gt=0)


class _User(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(min_length=1)
    password: str = Field(min_length=1)
    permissions: List[str] = Field(default_factory=list)
    api_keys: List[str] = Field(default_factory=list)

    @field_validator("permissions")
    @classmethod
    def _known(cls, v: List[str]) -> List[str]:
        expand_permissions(v)
        return v

    @field_validator("api_keys")
    @classmethod
    def _key_form(cls, v: List[str]) -> List[str]:
        for k in v:
            if not API_KEY_RE.match(k):
                raise ValueError(
                    "an API key must be 'sk-' followed by at least 13 letters or digits "
                    f"(got one of {len(k)} characters starting {k[:3]!r})")
        return v


class _ConfigFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    auth_config: _Settings
    user_config: List[_User] = Field(min_length=1)


@dataclass(frozen=True)
class User:
    """An authenticated caller: ``username`` and the permissions it holds (expanded)."""

    username: str
    permissions: FrozenSet[str]

    def allows(self, scope: str) -> bool:
        return "admin" in self.permissions or scope in self.permissions


class AuthService:
    """API keys, users and JWTs of one ``--auth-config``. Build it with
    :func:`load_auth_config`."""

    def __init__(self, config: _ConfigFile):
        s = config.auth_config
        self.algorithm = s.algorithm
        self._secret = s.secret_key
        self.expire = _dt.timedelta(minutes=s.token_expire_in_minutes)
        self._users: Dict[str, Tuple[str, User]] = {}
        self._keys: List[Tuple[bytes, User]] = []
        self._dummy: Optional[str] = None
        for u in config.user_config:
            user = User(u.username, expand_permissions(u.permissions))
            self._users[u.username] = (u.password, user)
            self._keys.extend((k.encode(), user) for k in u.api_keys)

    # ---- credentials ----------------------------------------------------------------------
    def _dummy_hash(self) -> str:
        """What an unknown username's password is compared with: a bcrypt hash of a
        random password with the cost of the first bcrypt user (made once), or, when no
        user has a bcrypt hash, a random plain password (compared in constant time like
        the users' plain ones)."""
        if self._dummy is None:
            rounds = next((int(p[4:6]) for p, _ in self._users.values()
                           if p.startswith(_BCRYPT_PREFIXES) and p[4:6].isdigit()), None)
            if rounds is None:
                self._dummy = secrets.token_hex(16)
            else:
                import bcrypt

                self._dummy = bcrypt.hashpw(secrets.token_hex(16).encode(),
                                            bcrypt.gensalt(rounds)).decode()
        return self._dummy

    def _password_ok(self, stored: str, given: str) -> bool:
        if stored.startswith(_BCRYPT_PREFIXES):
            import bcrypt

            try:
                return bcrypt.checkpw(given.encode(), stored.encode())
            except ValueError:
                return False
        return secrets.compare_digest(stored.encode(), given.encode())

    def issue_token(self, username: str, password: str) -> Dict[str, Any]:
        """``POST /token``: ``{"access_token": <JWT>, "token_type": "bearer",
        "expires_in": seconds}``; the JWT carries ``sub`` (the user), ``scopes`` and
        ``exp``.

        Raises:
            AuthenticationError: unknown user or wrong password (one message for both).
        """
        import jwt

        entry = self._users.get(username)
        # Check a password even for an unknown user, so timing does not tell users apart:
        # a bcrypt compare against a hash made at start-up (with the cost of the users'
        # own hashes) takes as long as a real user's.
        stored = entry[0] if entry else self._dummy_hash()
        if not self._password_ok(stored, password) or entry is None:
            raise AuthenticationError("Incorrect username or password")
        user = entry[1]
        now = _dt.datetime.now(_dt.timezone.utc)
        claims = {"sub": username, "scopes": sorted(user.permissions), "iat": now,
                  "exp": now + self.expire}
        token = jwt.encode(claims, self._secret, algorithm=self.algorithm)
        return {"access_token": token, "token_type": "bearer",
                "expires_in": int(self.expire.total_seconds())}

    def authenticate(self, authorization: Optional[str]) -> User:
        """The user behind an ``Authorization`` header value (``Bearer <key or JWT>``).

        Raises:
            AuthenticationError: no header, not a bearer credential, an unknown key, or a
                token that is forged, expired or names an unknown user.
        """
        if not authorization:
            raise AuthenticationError("Not authenticated: send 'Authorization: Bearer "
                                      "<API key or token>'")
        scheme, _, credential = authorization.strip().partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise AuthenticationError("Invalid authorization header: use 'Bearer <API key "
                                      "or token>'")
        if credential.startswith("sk-"):
            found = None
            given = credential.encode()
            for key, user in self._keys:  # compare with every key: constant time per key
                if secrets.compare_digest(key, given):
                    found = user
            if found is None:
                raise AuthenticationError("Invalid API key")
            return found
        return self._token_user(credential)

    def _token_user(self, token: str) -> User:
        import jwt

        try:
            claims = jwt.decode(token, self._secret, algorithms=[self.algorithm],
                                options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthenticationError("Token has expired; log in again") from None
        except jwt.PyJWTError as e:
            raise AuthenticationError(f"Invalid token ({type(e).__name__})") from None
        entry = self._users.get(claims.get("sub"))
        if entry is None:
            raise AuthenticationError("Invalid token (unknown user)")
        user = entry[1]
        try:
            granted = expand_permissions(claims.get("scopes") or [])
        except ValueError:
            granted = frozenset()
        # What the token was issued with, and what the user still holds.
        if "admin" in granted and "admin" in user.permissions:
            return user
        return User(user.username, granted & user.permissions)

    def check(self, authorization: Optional[str], scope: str) -> User:
        """Authenticate, then require ``scope``.

        Raises:
            AuthenticationError: see :meth:`authenticate`.
            PermissionDeniedError: the user lacks ``scope``.
        """
        user = self.authenticate(authorization)
        if not user.allows(scope):
            raise PermissionDeniedError(
                f"User {user.username!r} lacks the permission {scope!r} for this route")
        return user


def _field(loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_auth_config(path: str) -> AuthService:
    """Read and validate ``--auth-config``.

    Raises:
        AuthConfigError: unreadable file, invalid JSON, or a bad field (named, e.g.
            ``user_config[1].api_keys: an API key must be 'sk-' ...``); duplicate
            usernames or API keys.
    """
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise AuthConfigError(f"cannot read auth config {path}: {e}") from None
    except ValueError as e:
        raise AuthConfigError(f"auth config {path} is not valid JSON: {e}") from None
    try:
        config = _ConfigFile.model_validate(raw)
    except ValidationError as e:
        parts = [f"{_field(err['loc']) or 'file'}: {err['msg']}" for err in e.errors()]
        raise AuthConfigError(f"invalid auth config {path}: " + "; ".join(parts)) from None
    names, keys = set(), set()
    for i, u in enumerate(config.user_config):
        if u.username in names:
            raise AuthConfigError(f"invalid auth config {path}: user_config[{i}].username: "
                                  f"duplicate user {u.username!r}")
        names.add(u.username)
        for k in u.api_keys:
            if k in keys:
                raise AuthConfigError(f"invalid auth config {path}: user_config[{i}]."
                                      "api_keys: an API key is given twice")
            keys.add(k)
    return AuthService(config)


class AuthMiddleware:
    """ASGI middleware in front of every route (pure ASGI, so streamed responses and
    disconnect detection pass through untouched).

    A request is matched to the app's routes as the router will match it; a route from the
    route tables needs its scope, a path in :data:`PUBLIC_PATHS` or a non-API route (static
    files) is let through, and any other API route is refused (fail closed).

    Args:
        app: the ASGI app to protect (the FastAPI app's router stack).
        fastapi_app: the FastAPI app whose ``router.routes`` are matched.
        service: the configured :class:`AuthService`.
        scopes: ``{(method, path): scope}`` from the route tables.
    """

    def __init__(self, app, fastapi_app, service: AuthService,
                 scopes: Dict[Tuple[str, str], Optional[str]]):
        self.app = app
        self._fastapi = fastapi_app
        self.service = service
        self._scopes = scopes

    def _scope_for(self, scope) -> Tuple[bool, Optional[str]]:
        """``(protected, needed scope)`` for an HTTP request; ``(False, None)`` public."""
        from starlette.routing import Match, Mount, Route as StarletteRoute

        method = scope.get("method", "GET")
        for route in self._fastapi.router.routes:
            match, _ = route.matches(scope)
            if match == Match.NONE:
                continue
            if isinstance(route, Mount) or not isinstance(route, StarletteRoute):
                return False, None  # static files (the web UI)
            if match == Match.PARTIAL:  # another method: the router answers 405
                continue
            # Public by the route's template, not by the literal path: "/ui/{path:path}"
            # covers /ui/js/app.js, and a path spelling a template is not special.
            if route.path in PUBLIC_PATHS:
                return False, None
            key = (method, route.path)
            if method == "HEAD" and key not in self._scopes:
                key = ("GET", route.path)
            if self._scopes.get(key):
                return True, self._scopes[key]
            return True, "admin"  # an API route outside the tables: fail closed
        return True, None  # unknown path: authenticate, then the router answers 404

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        protected, needed = self._scope_for(scope)
        if protected:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                       for k, v in scope.get("headers", [])}
            try:
                # Anthropic clients send the key as x-api-key
                authorization = headers.get("authorization") or (
                    f"Bearer {headers['x-api-key']}" if headers.get("x-api-key") else None)
                user = self.service.authenticate(authorization)
                if needed is not None and not user.allows(needed):
                    raise PermissionDeniedError(
                        f"User {user.username!r} lacks the permission {needed!r} for this "
                        "route")
            except (AuthenticationError, PermissionDeniedError) as e:
                from .errors import exception_to_response

                resp = exception_to_response(e)
                if scope.get("path", "").startswith("/v1/messages"):  # Anthropic's shape
                    from fastapi.responses import JSONResponse

                    from .anthropic import error_body

                    www = resp.headers.get("www-authenticate")
                    resp = JSONResponse(error_body(e.status_code, e.message),
                                        status_code=e.status_code,
                                        headers={"WWW-Authenticate": www} if www else None)
                return await resp(scope, receive, send)
            state = scope.setdefault("state", {})
            state["user"], state["admin"] = user.username, "admin" in user.permissions
            state["permissions"] = user.permissions
        return await self.app(scope, receive, send)
