"""The cluster's actor-pool secret: xoscar frames are signed with it and frames without it
are refused.

xoscar (0.12+) authenticates every frame of its socket transports with HMAC-SHA256 when
the process has ``XOSCAR_AUTH_KEY`` in its environment, and then refuses frames that carry
no valid MAC before unpickling anything (``xoscar/serialization/_security.py`` and
``aio.py``). Without it an actor pool executes whatever a peer on its port sends, since
frames are cloudpickle. So every process of a cluster holds the same key:

- the supervisor (``xinference-supervisor``, ``xinference-local``) takes it from
  ``--cluster-key`` or ``$XOSCAR_AUTH_KEY``, else from ``XINFERENCE_HOME/auth/cluster_key``,
  else generates one (256 random bits) and saves it there (mode 0600), so a restarted
  supervisor keeps its key and its running workers and models keep working;
- a worker takes ``$XOSCAR_AUTH_KEY`` when set, else asks the supervisor's REST API for it
  when it joins (``GET /v1/cluster/key``, which needs an admin API key when the supervisor
  runs with ``--auth-config``; see :mod:`xinference.core.discovery`);
- model processes inherit it from their worker's environment (xoscar starts sub-pools with
  the parent's environment).

:func:`install` puts the key into this process's environment, before its pool starts.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Optional

from ..constants import xinference_home
from ..fileio import atomic_write

logger = logging.getLogger(__name__)

#: xoscar's variable: frames are signed and checked with it when it is set
XOSCAR_ENV_AUTH_KEY = "XOSCAR_AUTH_KEY"
#: the shortest key accepted from an operator, in characters
MIN_KEY_LENGTH = 16


def key_file() -> Path:
    """``XINFERENCE_HOME/auth/cluster_key``: the supervisor's saved key (mode 0600)."""
    return xinference_home() / "auth" / "cluster_key"


def current_key() -> Optional[str]:
    """The key this process signs its frames with (``$XOSCAR_AUTH_KEY``), or None."""
    return os.environ.get(XOSCAR_ENV_AUTH_KEY) or None


def check_key(key: str) -> str:
    """``key`` stripped, when it is long enough.

    Raises:
        ValueError: shorter than :data:`MIN_KEY_LENGTH` characters, or not printable
            ASCII (it travels in an environment variable and a JSON answer)."""
    key = key.strip()
    if len(key) < MIN_KEY_LENGTH or not key.isascii() or not key.isprintable():
        raise ValueError(f"the cluster key must be at least {MIN_KEY_LENGTH} printable "
                         "ASCII characters")
    return key


def supervisor_key(given: Optional[str] = None) -> str:
    """The key of a supervisor process (see the module docstring for the order: ``given``
    (``--cluster-key``), ``$XOSCAR_AUTH_KEY``, the saved file, a new one saved there).

    Raises:
        ValueError: a given key is too short (see :func:`check_key`)."""
    if given:
        return check_key(given)
    env = current_key()
    if env:
        return check_key(env)
    path = key_file()
    try:
        saved = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        saved = ""
    if saved:
        try:
            return check_key(saved)
        except ValueError:
            logger.warning("Ignoring the unusable cluster key in %s; making a new one", path)
    key = secrets.token_hex(32)
    atomic_write(path, key + "\n", mode=0o600)
    logger.info("Generated the cluster key (saved in %s)", path)
    return key


def install(key: str) -> None:
    """Sign and check this process's actor frames with ``key`` from now on (and in the
    model processes it starts). Call it before the process's actor pool starts."""
    os.environ[XOSCAR_ENV_AUTH_KEY] = key
