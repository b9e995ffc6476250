"""Server and cluster state: ``/status``, ``/v1/address``, ``/v1/cluster/*``,
``/v1/workers``."""

from __future__ import annotations

import time

from ... import __version__
from . import Route, Router


class ClusterRouter(Router):
    ROUTES = [
        Route("GET", "/status", "status", None),
        # Workers ask it for the supervisor's internal xoscar address when they join (with
        # auth on, using an admin API key: see doc/team.md).
        Route("GET", "/v1/address", "address", "admin"),
        # ... and for the cluster's actor-pool key (xinference.core.cluster_key).
        Route("GET", "/v1/cluster/key", "cluster_key", "admin"),
        Route("GET", "/v1/cluster/info", "cluster_info", "admin"),
        Route("GET", "/v1/cluster/version", "cluster_version", None),
        Route("GET", "/v1/workers", "workers_info", "admin"),
    ]

    async def status(self):
        return {"status": "ok", "version": __version__,
                "uptime": time.time() - self.api.started}

    async def address(self):
        return self.api.supervisor_address

    async def cluster_key(self):
        """``{"key": ...}``: the key every actor pool of the cluster signs its frames with
        (:mod:`xinference.core.cluster_key`); admin only."""
        from ...core.cluster_key import current_key

        return {"key": current_key()}

    async def cluster_info(self):
        """``[{"node_type": "Supervisor" | "Worker", "address", "ip_address", "cpu_count",
        "memory_total", "memory_available", "gpu_count", "gpu_vram_total", "gpus", ...}]``:
        the supervisor first, then every live worker with its models."""
        return await (await self.api.supervisor()).get_cluster_info()

    async def workers_info(self):
        """The live workers as in ``/v1/cluster/info`` (see SupervisorActor)."""
        return await (await self.api.supervisor()).get_workers_info()

    async def cluster_version(self):
        return {"version": __version__}


ROUTERS = [ClusterRouter]
