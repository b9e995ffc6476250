"""Process-wide constants and environment variable names.

Every value that users may override comes from an environment variable named like the one
Xinference documents (``XINFERENCE_HOME``, ``XINFERENCE_ENDPOINT`` ...).
"""

import os
from pathlib import Path

XINFERENCE_ENV_HOME = "XINFERENCE_HOME"
XINFERENCE_ENV_ENDPOINT = "XINFERENCE_ENDPOINT"
XINFERENCE_ENV_HEALTH_CHECK_INTERVAL = "XINFERENCE_HEALTH_CHECK_INTERVAL"
# "0" disables the model process that a worker starts ahead of the next launch.
XINFERENCE_ENV_SPARE_PROCESS = "XINFERENCE_SPARE_MODEL_PROCESS"

XINFERENCE_DEFAULT_HOST = "127.0.0.1"
XINFERENCE_DEFAULT_PORT = 9997
XINFERENCE_DEFAULT_ENDPOINT = f"http://{XINFERENCE_DEFAULT_HOST}:{XINFERENCE_DEFAULT_PORT}"


def xinference_home() -> Path:
    """Root directory for caches, persisted registrations and logs.

    ``$XINFERENCE_HOME`` when set, else ``~/.xinference``. Read on every call so tests and
    processes started with another environment see their own value.
    """
    return Path(os.environ.get(XINFERENCE_ENV_HOME) or Path.home() / ".xinference")


def xinference_cache_dir() -> Path:
    """Where downloaded model files live: ``XINFERENCE_HOME/cache``."""
    return xinference_home() / "cache"


def xinference_model_dir() -> Path:
    """Where persisted custom registrations live: ``XINFERENCE_HOME/model/<type>/``."""
    return xinference_home() / "model"


def default_endpoint() -> str:
    """Endpoint the CLI talks to: ``$XINFERENCE_ENDPOINT`` or ``http://127.0.0.1:9997``."""
    return os.environ.get(XINFERENCE_ENV_ENDPOINT) or XINFERENCE_DEFAULT_ENDPOINT
