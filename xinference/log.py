"""Process-wide logging set-up shared by every server process (a leaf module)."""

from __future__ import annotations

import logging
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
