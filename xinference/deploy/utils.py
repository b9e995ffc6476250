"""Helpers shared by the deploy commands: logging set-up and free ports."""

from __future__ import annotations

import logging
import socket
from typing import Optional


LOG_LEVEL_ENV = "XINFERENCE_LOG_LEVEL"


def setup_logging(level: Optional[str] = None) -> None:
    """Root logging for the server processes, e.g. ``INFO``. The level is also put in the
    environment (``XINFERENCE_LOG_LEVEL``), which model processes inherit and follow;
    ``None`` reads it from there (default ``INFO``)."""
    import os

    level = level or os.environ.get(LOG_LEVEL_ENV) or "INFO"
    os.environ[LOG_LEVEL_ENV] = str(level).upper()
    logging.basicConfig(
        level=getattr(logging, str(level).upper(), logging.INFO),
        format="%(asctime)s %(name)-28s %(process)d %(levelname)-7s %(message)s",
    )
    # xoscar logs every sub-pool command line at INFO; keep the server log readable.
    logging.getLogger("xoscar").setLevel(max(logging.WARNING, logging.getLogger().level))


def get_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def run_event_loop(main) -> None:
    """``asyncio.run(main)`` on uvloop when it is installed (xoscar's dependency; it cuts the
    per-chunk CPU cost of streaming in the API process), else on the default loop."""
    import asyncio

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with xoscar on Linux
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
