"""``xinference-local``: supervisor, worker and REST API in one process.

One xoscar main pool holds the SupervisorActor and the WorkerActor; uvicorn serves the REST
API on the same asyncio loop. SIGINT/SIGTERM stop uvicorn, then every model process is
terminated and the pool stopped, so no model process outlives the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Optional

import xoscar as xo

from .utils import run_event_loop, setup_logging, shutdown_cluster, start_main_pool

logger = logging.getLogger(__name__)


async def create_local_cluster(pool_host: str = "127.0.0.1", pool_port: Optional[int] = None):
    """Start the main pool with both actors; returns ``(pool, supervisor_ref, worker_ref)``."""
    from ..constants import SUPERVISOR_UID, WORKER_UID
    from ..core.supervisor import SupervisorActor
    from ..core.worker import WorkerActor

    pool = await start_main_pool(pool_host, pool_port)
    supervisor = await xo.create_actor(
        SupervisorActor, address=pool.external_address, uid=SUPERVISOR_UID
    )
    worker = await xo.create_actor(
        WorkerActor, pool.external_address, pool,
        address=pool.external_address, uid=WORKER_UID,
    )
    await supervisor.add_worker(pool.external_address, local=True)
    return pool, supervisor, worker


def _uvicorn_server(config):
    """A uvicorn server that stops on SIGINT/SIGTERM without re-raising the signal at the
    end (uvicorn does by default), so the caller's clean-up of model processes runs."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            loop = asyncio.get_running_loop()
            sigs = (signal.SIGINT, signal.SIGTERM)
            for sig in sigs:
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in sigs:
                    loop.remove_signal_handler(sig)

    return _Server(config)


async def serve_rest_api(supervisor_address: str, host: str, port: int, log_level: str,
                         auth=None) -> None:
    """Serve the REST API of the supervisor at ``supervisor_address`` on ``host:port`` until
    SIGINT/SIGTERM; returns then, leaving clean-up to the caller. ``auth``: an
    :class:`~xinference.api.auth.AuthService` (``--auth-config``)."""
    import uvicorn

    from ..api.restful_api import create_app

    app = create_app(supervisor_address, auth, bind_host=host)
    config = uvicorn.Config(app, host=host, port=port,
                            log_level=log_level.lower(), timeout_graceful_shutdown=5)
    logger.info("Xinference serving at http://%s:%d (actor pool %s)", host, port,
                supervisor_address)
    await _uvicorn_server(config).serve()


async def _serve(host: str, port: int, log_level: str, auth=None,
                 cluster_key: Optional[str] = None) -> None:
    from ..core.cluster_key import install, supervisor_key

    install(supervisor_key(cluster_key))
    pool, supervisor, worker = await create_local_cluster()
    try:
        await serve_rest_api(pool.external_address, host, port, log_level, auth)
    finally:
        logger.info("Shutting down: terminating model processes")
        await shutdown_cluster(pool, worker)


def run_local(host: str, port: int, log_level: str = "INFO", auth=None,
              cluster_key: Optional[str] = None) -> None:
    """Blocking entry point of ``xinference-local``; ``auth`` as in
    :func:`serve_rest_api`; ``cluster_key``: the actor pools' key (``--cluster-key``;
    default: see :func:`xinference.core.cluster_key.supervisor_key`)."""
    setup_logging(log_level)
    run_event_loop(_serve(host, port, log_level, auth, cluster_key))
