"""Helpers shared by the deploy commands: logging set-up and free ports."""

from __future__ import annotations

import logging
import socket


def setup_logging(level: str) -> None:
    """Root logging for the server processes, e.g. ``INFO``."""
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
