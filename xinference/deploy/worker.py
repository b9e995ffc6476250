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


def auth_headers(api_key: Optional[str]) -> dict:
    """``Authorization`` for the supervisor's REST API: ``api_key`` or
    ``$XINFERENCE_API_KEY`` (a key of a user with the ``admin`` permission, needed when the
    supervisor runs with ``--auth-config``)."""
    import os

    key = api_key or os.environ.get("XINFERENCE_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def fetch_supervisor_address(endpoint: str, timeout: float = 60.0,
                             api_key: Optional[str] = None) -> str:
    """``GET {endpoint}/v1/address``, retried until ``timeout`` seconds have passed.

    Raises:
        RuntimeError: the endpoint did not answer in time (names the endpoint and error),
            or refused the credential (401/403: at once).
    """
    import requests

    url = endpoint.rstrip("/") + "/v1/address"
    deadline = time.monotonic() + timeout
    while True:
        try:
            resp = requests.get(url, timeout=5, headers=auth_headers(api_key))
            if resp.status_code in (401, 403):
                raise PermissionError(
                    f"the supervisor at {endpoint} refused this worker "
                    f"({resp.status_code}: {resp.json().get('detail')}); give an admin "
                    "API key with --api-key or XINFERENCE_API_KEY")
            resp.raise_for_status()
            return resp.json()
        except PermissionError as e:
            raise RuntimeError(str(e)) from None
        except Exception as e:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"The supervisor at {endpoint} did not answer {url} within "
                    f"{timeout:.0f}s ({e}); start it with 'xinference-supervisor' first"
                ) from e
            time.sleep(0.5)


async def start_worker(endpoint: str, host: str, worker_port: Optional[int] = None,
                       api_key: Optional[str] = None):
    """Start the worker pool and actor; returns ``(pool, worker_ref)``."""
    from ..core import xoscar_setup  # noqa: F401  (before the pool starts)
    from ..core.worker import WorkerActor

    supervisor_address = await asyncio.to_thread(fetch_supervisor_address, endpoint, 60.0,
                                                 api_key)
    h = pool_host(host)
    address = f"{h}:{worker_port or get_free_port(h)}"
    pool = await xo.create_actor_pool(address, n_process=0, auto_recover=False)
    worker = await xo.create_actor(
        WorkerActor, supervisor_address, pool, endpoint=endpoint, api_key=api_key,
        address=pool.external_address, uid=WorkerActor.default_uid(),
    )
    logger.info("Worker at %s, supervisor at %s (%s)", pool.external_address,
                supervisor_address, endpoint)
    return pool, worker


async def _serve(endpoint: str, host: str, worker_port: Optional[int],
                 api_key: Optional[str] = None) -> None:
    pool, worker = await start_worker(endpoint, host, worker_port, api_key)
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
               log_level: str = "INFO", api_key: Optional[str] = None) -> None:
    """Blocking entry point of ``xinference-worker``; ``api_key``: see
    :func:`auth_headers`."""
    setup_logging(log_level)
    run_event_loop(_serve(endpoint, host, worker_port, api_key))
