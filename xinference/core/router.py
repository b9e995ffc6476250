"""Routing to a model's replicas: round-robin over the ready ones, and request aborts.

The REST API asks the supervisor once per request for a model's actor ref
(:meth:`ReplicaRouter.get_model`) and then talks to the ModelActor directly, so inference
traffic never flows through the supervisor.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import xoscar as xo

from ..constants import health_check_timeout
from ..errors import ModelNotFoundError, ModelUnavailableError, RequestNotFoundError
from .model_table import ModelTable
from .workers import WorkerTable

logger = logging.getLogger(__name__)


class ReplicaRouter:
    """Finds the replica that serves a call (see the module docstring); keeps no state of
    its own beyond the round-robin position in the model table."""

    def __init__(self, workers: WorkerTable, models: ModelTable):
        self._workers = workers
        self._models = models

    async def get_model(self, model_uid: str):
        """The ModelActor ref of the next ready replica (round-robin). A replica whose
        process died or whose worker does not answer is skipped; one found dead is marked
        so.

        Raises:
            ModelNotFoundError: not running. ModelUnavailableError: no replica can serve
            (process died, worker gone), or the model is lost.
        """
        m = self._models.running(model_uid)
        order = m.next_order()

        def healthy(r):
            w = self._workers.get(r["worker_address"])
            return w is not None and not w.suspect

        candidates = sorted((r for r in order if r["status"] == "ready"),
                            key=lambda r: not healthy(r))
        error: Optional[Exception] = None
        for r in candidates:
            w = self._workers.get(r["worker_address"])
            if w is None:
                continue
            try:
                return await self._workers.call(w, w.ref.get_model(r["replica_uid"]),
                                                health_check_timeout())
            except ModelUnavailableError as e:  # process died, or the worker is gone
                error = e
                if "has died" in e.message:
                    r.update(status="dead", error=e.message)
                    self._models.events.add(model_uid, f"Replica {r['replica_uid']} died: "
                                            f"{e.message}", "ERROR", "replica",
                                            r["replica_uid"])
                else:
                    logger.warning("Replica %s: %s; trying another replica",
                                   r["replica_uid"], e.message)
            except ModelNotFoundError:  # the worker no longer holds it
                r.update(status="dead", error="its worker no longer holds it")
            except Exception as e:  # connection refused/closed: the worker is going away
                w.suspect = True
                error = ModelUnavailableError(
                    f"Worker {w.address} holding {model_uid!r} is unreachable "
                    f"({type(e).__name__})")
                logger.warning("Replica %s: %s; trying another replica",
                               r["replica_uid"], error.message)
        if error is not None:
            raise error
        dead = [r for r in m.replicas if r["status"] == "dead"]
        reason = f" ({dead[0]['error']})" if dead else ""
        raise ModelUnavailableError(
            f"No replica of model {model_uid!r} can serve{reason}; terminate it and launch "
            "it again."
        )

    async def abort_request(self, model_uid: str, request_id: str,
                            owner: Optional[str] = None,
                            any_owner: bool = False) -> Dict[str, Any]:
        """Abort the running request ``request_id`` that ``owner`` sent to ``model_uid``
        (any owner's with ``any_owner``) on whichever replica runs it (see
        ``ModelActor.abort_request``).

        Raises:
            ModelNotFoundError: no such model. RequestNotFoundError: no replica runs it.
        """
        m = self._models.running(model_uid)
        for r in list(m.replicas):
            w = self._workers.get(r["worker_address"])
            if w is None or r["status"] != "ready":
                continue
            try:
                ref = await self._workers.call(w, w.ref.get_model(r["replica_uid"]),
                                               health_check_timeout())
                return await xo.wait_for(ref.abort_request(request_id, owner, any_owner),
                                         health_check_timeout())
            except RequestNotFoundError:
                continue
            except Exception as e:  # a replica that cannot answer does not run it
                logger.warning("Abort on replica %s failed: %s", r["replica_uid"], e)
        raise RequestNotFoundError(
            f"No running request {request_id!r} on model {model_uid!r}")
