"""Helpers shared by the deploy commands: logging set-up, addresses, the main actor pool."""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Optional

from ..log import LOG_LEVEL_ENV, setup_logging  # noqa: F401  (re-exported for deploy)

logger = logging.getLogger(__name__)


def get_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


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


async def start_main_pool(host: str, port: Optional[int] = None):
    """This process's xoscar main pool on ``host:port`` (a free port when ``port`` is
    None), with no sub-processes of its own (the worker adds one per model) and no
    automatic restart of them. Drops xoscar's lazy torch serializer first (see
    :mod:`xinference.core.xoscar_setup`)."""
    import xoscar as xo

    from ..core import xoscar_setup  # noqa: F401  (before the pool starts)

    address = f"{host}:{port or get_free_port(host)}"
    return await xo.create_actor_pool(address, n_process=0, auto_recover=False)


async def shutdown_cluster(pool, worker) -> None:
    """Terminate every model process of ``worker`` (a WorkerActor ref), then stop the
    pool."""
    import xoscar as xo

    try:
        await asyncio.wait_for(xo.destroy_actor(worker), timeout=30)
    except Exception:
        logger.exception("Stopping the worker failed")
    await pool.stop()


def run_event_loop(main) -> None:
    """``asyncio.run(main)`` on uvloop when it is installed (xoscar's dependency; it cuts the
    per-chunk CPU cost of streaming in the API process), else on the default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with xoscar on Linux
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
