"""Running the server for a team: model instances, persisted models, abort of a request,
cancel of a launch, the model cache and stopping the cluster.

Listed before the ``models`` area so that ``/v1/models/instances`` and
``/v1/models/persisted`` are not read as a model uid.
"""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Optional

from fastapi import Request

from . import Route, Router


class AdminRouter(Router):
    ROUTES = [
        Route("GET", "/v1/models/instances", "list_instances", "models:list"),
        Route("GET", "/v1/models/persisted", "list_persisted", "models:list"),
        Route("DELETE", "/v1/models/persisted/{model_uid}", "forget_persisted",
              "models:stop"),
        Route("POST", "/v1/models/{model_uid}/requests/{request_id}/abort",
              "abort_request", "models:read"),
        Route("POST", "/v1/models/{model_uid}/cancel", "cancel_launch", "models:stop"),
        Route("GET", "/v1/cache/models", "list_cached_models", "cache:list"),
        Route("GET", "/v1/cache/models/files", "list_cached_files", "cache:list"),
        Route("DELETE", "/v1/cache/models", "remove_cached_model", "cache:delete"),
        Route("DELETE", "/v1/clusters", "stop_cluster", "admin"),
    ]

    async def _supervisor(self):
        return await self.api.supervisor()

    async def list_instances(self, model_name: Optional[str] = None,
                             model_uid: Optional[str] = None):
        """``[{"model_name", "model_uid", "model_version", "model_ability", "replica",
        "status": "CREATING" | "READY" | "ERROR", "instance_created_ts", "error"}]``."""
        return await (await self._supervisor()).list_instances(model_name, model_uid)

    async def list_persisted(self):
        """``[{"model_uid", "launch": {the recorded launch request}, "status": "running" |
        "launching" | "pending" | "failed", "error"?}]``."""
        return await (await self._supervisor()).list_persisted_models()

    async def forget_persisted(self, model_uid: str):
        """Forget a persisted launch (404 when there is none); a running model keeps
        running but will not come back after a restart."""
        await (await self._supervisor()).forget_persisted_model(model_uid)
        return {"model_uid": model_uid, "deleted": True}

    async def abort_request(self, model_uid: str, request_id: str, request: Request):
        """Abort the running request that carried ``request_id``: a stream ends with
        ``finish_reason: "abort"``, a non-stream request is answered 499. 404 when no such
        request runs (finished already, or never started) or, with auth on, when another
        user sent it (admins may abort any)."""
        from ..caller import request_caller

        user, admin = request_caller(request)
        return await (await self._supervisor()).abort_request(model_uid, request_id, user,
                                                              admin)

    async def cancel_launch(self, model_uid: str):
        """Cancel the launch of ``model_uid`` (download or load); 400 when it is not
        launching. Answers once its processes and partial files are gone; the launch
        request itself is answered 499."""
        return await (await self._supervisor()).cancel_launch(model_uid)

    async def list_cached_models(self, model_name: Optional[str] = None,
                                 worker_ip: Optional[str] = None):
        """``{"list": [{"model_name", "model_format", "model_size_in_billions",
        "model_version", "path", "size_bytes", "files", "actor_ip_address"}]}``: what
        ``XINFERENCE_HOME/cache`` holds on each worker."""
        rows = await (await self._supervisor()).list_cached_models(model_name, worker_ip)
        return {"list": rows}

    async def list_cached_files(self, model_version: str, worker_ip: Optional[str] = None):
        """``{"model_version", "paths": [...], "workers": {address: [paths]}}``: what
        ``DELETE /v1/cache/models`` would remove."""
        found = await (await self._supervisor()).cached_model_paths(model_version,
                                                                    worker_ip)
        return {"model_version": model_version,
                "paths": [p for ps in found.values() for p in ps], "workers": found}

    async def remove_cached_model(self, model_version: str,
                                  worker_ip: Optional[str] = None):
        """Delete one model version from the cache (409 while a model runs from it, 404
        when not cached)."""
        removed = await (await self._supervisor()).remove_cached_model(model_version,
                                                                       worker_ip)
        return {"model_version": model_version, "deleted": True,
                "paths": [p for ps in removed.values() for p in ps], "workers": removed}

    async def stop_cluster(self):
        """Stop every worker (their models are terminated), then this server."""
        workers = await (await self._supervisor()).stop_cluster()
        asyncio.get_running_loop().call_later(0.5, os.kill, os.getpid(), signal.SIGTERM)
        return {"stopped_workers": workers, "supervisor": "stopping"}


ROUTERS = [AdminRouter]
