"""Virtual environments of the engines (``/v1/virtualenvs``, as upstream Xinference names
them): list them on every worker, remove one that no running model uses. See
:mod:`xinference.model.virtualenv` for what they hold and how they are made."""

from __future__ import annotations

from . import Route, Router


class VirtualEnvsRouter(Router):
    ROUTES = [
        Route("GET", "/v1/virtualenvs", "list_virtualenvs", "models:start"),
        Route("DELETE", "/v1/virtualenvs/{key}", "remove_virtualenv", "admin"),
    ]

    async def list_virtualenvs(self):
        """``{"object": "list", "data": [{"key", "path", "packages", "python_version",
        "size" (bytes), "created", "install_seconds", "in_use_by" (model uids),
        "worker_address"}]}``."""
        rows = await (await self.api.supervisor()).list_virtualenvs()
        return {"object": "list", "data": rows}

    async def remove_virtualenv(self, key: str):
        """``{"key", "removed": {worker address: path}, "deleted": true}``; 409 while a
        running model uses it, 404 when no worker has it."""
        out = await (await self.api.supervisor()).remove_virtualenv(key)
        return dict(out, deleted=True)


ROUTERS = [VirtualEnvsRouter]
