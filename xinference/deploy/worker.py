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
import socket
import time
from typing import Optional

import xoscar as xo

from .local import shutdown_cluster
from .utils import get_free_port, run_event_loop, setup_logging

logger = logging.getLogger(__name__)


def pool_host(host: str) -> str:
    """The address other machines reach this one at: ``host`` itself, or for a wildcard
    (``0.0.0.0``, ``::``, empty) the IP of the interface that routes outwards."""
    if host not in ("0.0.0.0", "::", ""):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # no packet is sent
            return s.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def fetch_supervisor_address(endpoint: str, timeout: float = 60.0) -> str:
    """``GET {endpoint}/v1/address``, retried until ``timeout`` seconds have passed.

    Raises:
        RuntimeError: the endpoint did not answer in time (names the endpoint and error).
    """
    import requests

    url = endpoint.rstrip("/") + "/v1/address"
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = requests.get(url, timeout=5)
            resp.raise_for_status()
            return resp.json()
        except Exception as e:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"The supervisor at {endpoint} did not answer {url} within "
                    f"{timeout:.0f}s ({e}); start it with 'xinference-supervisor' first"
                ) from e
            time.sleep(0.5)


async def start_worker(endpoint: str, host: str, worker_port: Optional[int] = None):
    """Start the worker pool and actor; returns ``(pool, worker_ref)``."""
    from ..core import xoscar_setup  # noqa: F401  (before the pool starts)
    from ..core.worker import WorkerActor

    supervisor_address = await asyncio.to_thread(fetch_supervisor_address, endpoint)
    h = pool_host(host)
    address = f"{h}:{worker_port or get_free_port(h)}"
    pool = await xo.create_actor_pool(address, n_process=0, auto_recover=False)
    worker = await xo.create_actor(
        WorkerActor, supervisor_address, pool, endpoint=endpoint,
        address=pool.external_address, uid=WorkerActor.default_uid(),
    )
    logger.info("Worker at %s, supervisor at %s (%s)", pool.external_address,
                supervisor_address, endpoint)
    return pool, worker


async def _serve(endpoint: str, host: str, worker_port: Optional[int]) -> None:
    pool, worker = await start_worker(endpoint, host, worker_port)
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
               log_level: str = "INFO") -> None:
    """Blocking entry point of ``xinference-worker``."""
    setup_logging(log_level)
    run_event_loop(_serve(endpoint, host, worker_port))
