"""``xinference-worker``: one worker of a cluster.

It asks the supervisor's REST endpoint for the supervisor's internal xoscar address
(``GET /v1/address``), starts its own main actor pool on ``host:worker_port`` holding a
:class:`~xinference.core.worker.WorkerActor`, and from then on heartbeats to the supervisor
(which registers it on the first one). SIGINT/SIGTERM: tell the supervisor it leaves,
terminate every model process, stop the pool.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Optional

import xoscar as xo

from .utils import pool_host, run_event_loop, setup_logging, shutdown_cluster, start_main_pool

logger = logging.getLogger(__name__)


async def start_worker(endpoint: str, host: str, worker_port: Optional[int] = None,
                       api_key: Optional[str] = None, cluster_key: Optional[str] = None):
    """Start the worker pool and actor; returns ``(pool, worker_ref)``. The actor-pool key
    is ``cluster_key``, else ``$XOSCAR_AUTH_KEY``, else the supervisor's answer to
    ``GET /v1/cluster/key`` (see :mod:`xinference.core.cluster_key`).

    Raises:
        RuntimeError: the supervisor did not answer, or refused the credential."""
    from ..constants import WORKER_UID
    from ..core.cluster_key import check_key, current_key, install
    from ..core.discovery import fetch_cluster_key, fetch_supervisor_address
    from ..core.worker import WorkerActor

    supervisor_address = await asyncio.to_thread(fetch_supervisor_address, endpoint, 60.0,
                                                 api_key)
    key = cluster_key or current_key()
    if not key:
        key = await asyncio.to_thread(fetch_cluster_key, endpoint, api_key)
    try:
        install(check_key(key))
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    pool = await start_main_pool(pool_host(host), worker_port)
    worker = await xo.create_actor(
        WorkerActor, supervisor_address, pool, endpoint=endpoint, api_key=api_key,
        address=pool.external_address, uid=WORKER_UID,
    )
    logger.info("Worker at %s, supervisor at %s (%s)", pool.external_address,
                supervisor_address, endpoint)
    return pool, worker


async def _serve(endpoint: str, host: str, worker_port: Optional[int],
                 api_key: Optional[str] = None, cluster_key: Optional[str] = None) -> None:
    pool, worker = await start_worker(endpoint, host, worker_port, api_key, cluster_key)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        logger.info("Shutting down: leaving the cluster, terminating model processes")
        try:
            await worker.leave()
        except Exception:
            logger.exception("Leaving the cluster failed")
        await shutdown_cluster(pool, worker)


def run_worker(endpoint: str, host: str, worker_port: Optional[int] = None,
               log_level: str = "INFO", api_key: Optional[str] = None,
               cluster_key: Optional[str] = None) -> None:
    """Blocking entry point of ``xinference-worker``; ``api_key``: see
    :func:`xinference.core.discovery.auth_headers`; ``cluster_key``: see
    :func:`start_worker`."""
    setup_logging(log_level)
    run_event_loop(_serve(endpoint, host, worker_port, api_key, cluster_key))
