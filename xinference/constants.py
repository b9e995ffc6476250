"""Process-wide constants and environment variable names.

Every value that users may override comes from an environment variable named like the one
Xinference documents (``XINFERENCE_HOME``, ``XINFERENCE_ENDPOINT`` ...).
"""

import os
from pathlib import Path

XINFERENCE_ENV_HOME = "XINFERENCE_HOME"
XINFERENCE_ENV_ENDPOINT = "XINFERENCE_ENDPOINT"
# An API key for the REST API (the CLI's default; a worker's credential for
# GET /v1/address when the supervisor runs with --auth-config).
XINFERENCE_ENV_API_KEY = "XINFERENCE_API_KEY"
XINFERENCE_ENV_HEALTH_CHECK_INTERVAL = "XINFERENCE_HEALTH_CHECK_INTERVAL"
# Cluster liveness: a worker heartbeats every INTERVAL seconds; the supervisor declares it
# dead after FAILURE_THRESHOLD intervals without one; calls to a worker that may be dead
# give up after TIMEOUT seconds.
XINFERENCE_ENV_HEALTH_CHECK_FAILURE_THRESHOLD = "XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD"
XINFERENCE_ENV_HEALTH_CHECK_TIMEOUT = "XINFERENCE_HEALTH_CHECK_TIMEOUT"
# "0" disables the model process that a worker starts ahead of the next launch.
XINFERENCE_ENV_SPARE_PROCESS = "XINFERENCE_SPARE_MODEL_PROCESS"
# "1": launches of engines that declare no packages of their own also run in a virtual
# environment (see xinference/model/virtualenv.py); --enable-virtual-env sets it.
XINFERENCE_ENV_ENABLE_VIRTUAL_ENV = "XINFERENCE_ENABLE_VIRTUAL_ENV"
# Where the virtual environments live (default XINFERENCE_HOME/virtualenv): several servers
# (or test runs with their own XINFERENCE_HOME) can share environments made once.
XINFERENCE_ENV_VIRTUAL_ENV_DIR = "XINFERENCE_VIRTUAL_ENV_DIR"

# xoscar uids of the cluster's actors: one SupervisorActor per cluster, one WorkerActor in
# each worker's main pool. Each side finds the other by address and these uids.
SUPERVISOR_UID = "supervisor"
WORKER_UID = "worker"

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


def _env_number(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 else default


def health_check_interval() -> float:
    """Seconds between a worker's heartbeats: ``$XINFERENCE_HEALTH_CHECK_INTERVAL``
    (default 5)."""
    return _env_number(XINFERENCE_ENV_HEALTH_CHECK_INTERVAL, 5.0)


def health_check_failure_threshold() -> float:
    """Missed heartbeats before a worker is declared dead:
    ``$XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD`` (default 3). A dead worker is noticed
    within ``interval * (threshold + 1)`` seconds."""
    return _env_number(XINFERENCE_ENV_HEALTH_CHECK_FAILURE_THRESHOLD, 3.0)


def health_check_timeout() -> float:
    """Seconds a call to a worker (or from a worker to the supervisor) may take before it
    counts as failed: ``$XINFERENCE_HEALTH_CHECK_TIMEOUT`` (default 10)."""
    return _env_number(XINFERENCE_ENV_HEALTH_CHECK_TIMEOUT, 10.0)
