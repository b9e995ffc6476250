"""``xinference-supervisor``: the supervisor of a cluster and its REST API.

One xoscar main pool on ``host:supervisor_port`` holds the
:class:`~xinference.core.supervisor.SupervisorActor`; uvicorn serves the REST API on
``host:port`` in the same process. Workers find the pool through ``GET /v1/address``.
Stopping the supervisor leaves the workers and their models running: when it starts
again on the same ports, each worker re-registers with its next heartbeat and its models
serve again.
"""

from __future__ import annotations

import logging
from typing import Optional

import xoscar as xo

from .local import serve_rest_api
from .utils import pool_host, run_event_loop, setup_logging, start_main_pool

logger = logging.getLogger(__name__)


async def start_supervisor(host: str, supervisor_port: Optional[int] = None):
    """Start the supervisor pool and actor; returns ``(pool, supervisor_ref)``."""
    from ..constants import SUPERVISOR_UID
    from ..core.supervisor import SupervisorActor

    pool = await start_main_pool(pool_host(host), supervisor_port)
    supervisor = await xo.create_actor(
        SupervisorActor, address=pool.external_address, uid=SUPERVISOR_UID
    )
    return pool, supervisor


async def _serve(host: str, port: int, supervisor_port: Optional[int],
                 log_level: str, auth=None, cluster_key: Optional[str] = None) -> None:
    from ..core.cluster_key import install, supervisor_key

    install(supervisor_key(cluster_key))
    pool, _ = await start_supervisor(host, supervisor_port)
    try:
        await serve_rest_api(pool.external_address, host, port, log_level, auth)
    finally:
        await pool.stop()


def run_supervisor(host: str, port: int, supervisor_port: Optional[int] = None,
                   log_level: str = "INFO", auth=None,
                   cluster_key: Optional[str] = None) -> None:
    """Blocking entry point of ``xinference-supervisor``; ``auth``: an
    :class:`~xinference.api.auth.AuthService` (``--auth-config``); ``cluster_key``: the
    actor pools' key (``--cluster-key``; default: see
    :func:`xinference.core.cluster_key.supervisor_key`)."""
    setup_logging(log_level)
    run_event_loop(_serve(host, port, supervisor_port, log_level, auth, cluster_key))
