"""Helpers shared by the deploy commands: logging set-up and free ports."""

from __future__ import annotations

import socket

from ..log import LOG_LEVEL_ENV, setup_logging  # noqa: F401  (re-exported for deploy)


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
