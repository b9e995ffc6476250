"""A running model's events and its replicas at run time (upstream Xinference's routes):
``GET /v1/models/{uid}/events``, ``GET /v1/models/{uid}/replicas``, ``POST
/v1/models/{uid}/replicas/scale_out`` and ``.../scale_in`` with ``{"cnt": n}``,
``DELETE /v1/models/{uid}/replicas/{replica_id}``. The supervisor does the work
(:mod:`xinference.core.scaling`, :mod:`xinference.core.events`)."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel

from . import Route, Router


class ScaleReplicasRequest(BaseModel):
    """``{"cnt": n}``: replicas to add or remove (an integer >= 1; checked by the
    supervisor, 400 otherwise)."""

    cnt: Optional[Any] = None


class ReplicasRouter(Router):
    ROUTES = [
        Route("GET", "/v1/models/{model_uid}/events", "get_events", "models:list"),
        Route("GET", "/v1/models/{model_uid}/replicas", "list_replicas", "models:list"),
        Route("POST", "/v1/models/{model_uid}/replicas/scale_out", "scale_out",
              "models:start"),
        Route("POST", "/v1/models/{model_uid}/replicas/scale_in", "scale_in", "models:stop"),
        Route("DELETE", "/v1/models/{model_uid}/replicas/{replica_id}", "remove_replica",
              "models:stop"),
    ]

    def _forget_refs(self, model_uid: str) -> None:
        """The gateway's cached replica refs of ``model_uid`` (if it keeps any) are
        stale once replicas come or go: new ones get requests at once, removed ones
        none."""
        cache = getattr(self.api, "models", None)
        if cache is not None and hasattr(cache, "drop"):
            cache.drop(model_uid)

    async def get_events(self, model_uid: str):
        """``[{"event_type", "event_ts", "event_content", "kind", "replica_uid"}]``,
        oldest first; 404 for a uid never launched here."""
        return await (await self.api.supervisor()).get_model_events(model_uid)

    async def list_replicas(self, model_uid: str):
        return await (await self.api.supervisor()).list_replicas(model_uid)

    async def scale_out(self, model_uid: str, body: ScaleReplicasRequest):
        """Add ``cnt`` replicas; answers with the replica list once they serve."""
        replicas = await (await self.api.supervisor()).scale_out(model_uid, body.cnt)
        self._forget_refs(model_uid)
        return {"model_uid": model_uid, "replicas": replicas}

    async def _remove(self, model_uid: str, cnt=None, replica_id=None):
        sup = await self.api.supervisor()
        rows = await sup.detach_replicas(model_uid, cnt, replica_id)
        self._forget_refs(model_uid)  # before the drain: no new request reaches them
        await sup.stop_replicas(model_uid, rows)
        return {"model_uid": model_uid, "removed": [r["replica_uid"] for r in rows],
                "replicas": await sup.list_replicas(model_uid)}

    async def scale_in(self, model_uid: str, body: ScaleReplicasRequest):
        """Remove ``cnt`` replicas (dead ones first, then the newest); answers once their
        in-flight requests finished and their processes stopped."""
        return await self._remove(model_uid, cnt=body.cnt)

    async def remove_replica(self, model_uid: str, replica_id: str):
        return await self._remove(model_uid, replica_id=replica_id)


ROUTERS = [ReplicasRouter]
